package zulip

import "context"

// User is the part of GET /users/me the proxy needs.
type User struct {
	UserID   int64  `json:"user_id"`
	Email    string `json:"email"`
	FullName string `json:"full_name"`
	IsBot    bool   `json:"is_bot"`
}

type meAnswer struct {
	envelope
	User
}

// Me returns the bot's own user. GET /users/me.
func (c *Client) Me(ctx context.Context) (*User, *Response, error) {
	var a meAnswer
	resp, err := c.call(ctx, &request{method: "GET", path: "/users/me", endpoint: "GET /users/me"}, &a)
	if err != nil {
		return nil, resp, err
	}
	u := a.User
	return &u, resp, nil
}

// ServerSettings fetches the server's public settings (version, feature
// level, realm name). GET /server_settings; sent without credentials,
// since Zulip needs none there.
func (c *Client) ServerSettings(ctx context.Context) (*Response, error) {
	var a anyAnswer
	return c.call(ctx, &request{method: "GET", path: "/server_settings", auth: authNone, endpoint: "GET /server_settings"}, &a)
}

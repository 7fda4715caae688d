package emulator

import (
	"encoding/base64"
	"strings"
)

// authBasic authenticates like Zulip's authenticated_rest_api_view: HTTP
// Basic with email:api_key, every failure a 401 UNAUTHORIZED with
// WWW-Authenticate (Zulip wraps the underlying error's message).
func (x *exchange) authBasic() *apiError {
	h := x.r.Header.Get("Authorization")
	if h == "" {
		return errUnauthorized("Not logged in: API authentication or user session required")
	}
	fields := strings.Fields(h)
	if len(fields) != 2 {
		return errUnauthorized("Invalid authorization header for basic auth")
	}
	if !strings.EqualFold(fields[0], "basic") {
		return errBadRequest("This endpoint requires HTTP basic authentication.")
	}
	raw, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return errUnauthorized("Invalid authorization header for basic auth")
	}
	// Python's str.split(":") into exactly two names: a key with a
	// colon, or none at all, is a malformed header.
	parts := strings.Split(string(raw), ":")
	if len(parts) != 2 {
		return errUnauthorized("Invalid authorization header for basic auth")
	}
	u, aerr := x.e.userByKey(parts[1], &parts[0])
	if aerr != nil {
		return errUnauthorized(aerr.msg)
	}
	x.setUser(u)
	return nil
}

// authAPIKeyParam authenticates an incoming webhook by its api_key
// parameter, like Zulip's webhook_view: errors are not wrapped there.
func (x *exchange) authAPIKeyParam() *apiError {
	key, ok := x.p.lookup("api_key")
	if !ok {
		return errMissing("api_key")
	}
	u, aerr := x.e.userByKey(key, nil)
	if aerr != nil {
		return aerr
	}
	x.setUser(u)
	return nil
}

func (x *exchange) setUser(u *user) {
	x.user = u
	x.rec.User = u.Email
	x.rec.UserID = u.ID
}

// userByKey is Zulip's validate_api_key: whitespace stripped, the key's
// format checked, the email (when given) compared case-insensitively.
func (e *Emulator) userByKey(key string, email *string) (*user, *apiError) {
	key = strings.TrimSpace(key)
	if !apiKeyFormat.MatchString(key) {
		return nil, errInvalidAPIKey("Malformed API key")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	u, ok := e.usersByKey[key]
	if !ok {
		return nil, errInvalidAPIKey("Invalid API key")
	}
	if email != nil && !strings.EqualFold(strings.TrimSpace(*email), u.Email) {
		// The key is right but belongs to someone else.
		return nil, errInvalidAPIKey("Invalid API key")
	}
	if !u.Active {
		return nil, &apiError{status: 401, code: "USER_DEACTIVATED", msg: "Account is deactivated"}
	}
	return u, nil
}

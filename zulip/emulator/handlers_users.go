package emulator

import "time"

// getOwnUser is GET /users/me.
func getOwnUser(x *exchange, _ []string) *apiError {
	u := x.user
	role := 400 // member
	if u.IsAdmin {
		role = 200
	}
	x.e.mu.Lock()
	maxID := x.e.nextMsgID - 1
	x.e.mu.Unlock()
	x.success(obj{
		{"avatar_url", "https://secure.gravatar.com/avatar/0?d=identicon&version=1"},
		{"avatar_version", 1},
		{"email", u.Email},
		{"full_name", u.FullName},
		{"is_admin", u.IsAdmin},
		{"is_owner", false},
		{"role", role},
		{"is_guest", false},
		{"is_bot", u.IsBot},
		{"is_active", true},
		{"timezone", ""},
		{"date_joined", time.Unix(1700000000, 0).UTC().Format("2006-01-02T15:04:05.000000+00:00")},
		{"max_message_id", maxID},
		{"user_id", u.ID},
		{"delivery_email", u.Email},
	})
	return nil
}

// serverSettings is GET /server_settings, which needs no credentials.
func serverSettings(x *exchange, _ []string) *apiError {
	scheme := "http"
	if x.r.TLS != nil {
		scheme = "https"
	}
	realmURL := scheme + "://" + x.r.Host
	x.success(obj{
		{"authentication_methods", obj{
			{"password", true}, {"dev", false}, {"email", true}, {"ldap", false},
			{"remoteuser", false}, {"github", false}, {"azuread", false}, {"gitlab", false},
			{"apple", false}, {"google", false}, {"saml", false},
		}},
		{"external_authentication_methods", []any{}},
		{"zulip_feature_level", featureLevel},
		{"zulip_version", zulipVersion},
		{"zulip_merge_base", zulipVersion},
		{"push_notifications_enabled", false},
		{"is_incompatible", false},
		{"email_auth_enabled", true},
		{"require_email_format_usernames", true},
		{"realm_uri", realmURL},
		{"realm_url", realmURL},
		{"realm_name", x.e.cfg.realmName},
		{"realm_icon", "https://secure.gravatar.com/avatar/0?d=identicon"},
		{"realm_description", "<p>An emulated Zulip organization for tests and demos.</p>"},
		{"realm_web_public_access_enabled", false},
	})
	return nil
}

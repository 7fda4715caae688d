package emulator

import (
	"encoding/json"
	"strconv"
	"strings"
)

// getStreamID is GET /get_stream_id.
func getStreamID(x *exchange, _ []string) *apiError {
	name, ok := x.p.lookup("stream")
	if !ok {
		return errMissing("stream")
	}
	x.e.mu.Lock()
	s := x.e.streamsByKey[strings.ToLower(name)]
	readable := s != nil && s.canRead(x.user)
	x.e.mu.Unlock()
	if !readable {
		return errBadRequest("Invalid channel name '%s'", name)
	}
	x.success(obj{{"stream_id", s.ID}})
	return nil
}

// getStreamTopics is GET /users/me/{stream_id}/topics.
func getStreamTopics(x *exchange, vars []string) *apiError {
	allowEmpty, aerr := x.boolParam("allow_empty_topic_name", false)
	if aerr != nil {
		return aerr
	}
	x.e.mu.Lock()
	s := x.e.streams[parseID(vars[0])]
	if s == nil || !s.canRead(x.user) {
		x.e.mu.Unlock()
		return errBadRequest("Invalid channel ID")
	}
	topics := s.topicList()
	x.e.mu.Unlock()
	list := make([]obj, 0, len(topics))
	for _, t := range topics {
		name := t.name
		if name == "" && !allowEmpty {
			name = emptyTopicName
		}
		list = append(list, obj{{"max_id", t.maxID}, {"name", name}})
	}
	x.success(obj{{"topics", list}})
	return nil
}

// subscribe is POST /users/me/subscriptions: it creates every stream
// that does not exist yet, which is why a proxy must never forward it.
func subscribe(x *exchange, _ []string) *apiError {
	raw, ok := x.p.lookup("subscriptions")
	if !ok {
		return errMissing("subscriptions")
	}
	var subs []struct {
		Name        *string `json:"name"`
		Description string  `json:"description"`
	}
	if err := json.Unmarshal([]byte(raw), &subs); err != nil {
		return errInvalidVar("subscriptions", "subscriptions is not valid JSON")
	}
	inviteOnly, aerr := x.boolParam("invite_only", false)
	if aerr != nil {
		return aerr
	}
	if _, ok := x.p.lookup("principals"); ok {
		return errBadRequest("principals is not supported by the emulator")
	}
	x.e.mu.Lock()
	// Zulip checks the permission to create for every missing stream
	// before it changes anything.
	for _, sub := range subs {
		if sub.Name != nil && x.e.noStreamCreation && x.e.streamsByKey[strings.ToLower(strings.TrimSpace(*sub.Name))] == nil {
			x.e.mu.Unlock()
			return errBadRequest("Insufficient permission")
		}
	}
	var subscribed, already []string
	for i, sub := range subs {
		if sub.Name == nil {
			x.e.mu.Unlock()
			return errInvalidVar("subscriptions", "subscriptions[%d] is missing name", i)
		}
		name := strings.TrimSpace(*sub.Name)
		s := x.e.streamsByKey[strings.ToLower(name)]
		if s == nil {
			var err error
			s, err = x.e.createStreamLocked(Stream{Name: name, InviteOnly: inviteOnly, Description: sub.Description})
			if err != nil {
				x.e.mu.Unlock()
				return errBadRequest("Invalid channel name '%s'", name)
			}
		} else if !s.canRead(x.user) {
			x.e.mu.Unlock()
			return errBadRequest("Unable to access channel (%s).", name)
		}
		if s.subs[x.user.ID] {
			already = append(already, s.Name)
			continue
		}
		s.subs[x.user.ID] = true
		subscribed = append(subscribed, s.Name)
	}
	x.e.mu.Unlock()
	uid := strconv.FormatInt(x.user.ID, 10)
	data := obj{{"subscribed", map[string][]string{}}, {"already_subscribed", map[string][]string{}}}
	if len(subscribed) > 0 {
		data[0].v = map[string][]string{uid: subscribed}
	}
	if len(already) > 0 {
		data[1].v = map[string][]string{uid: already}
	}
	x.success(data)
	return nil
}

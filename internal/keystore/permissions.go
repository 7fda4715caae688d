package keystore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// What a scoped key may do in its stream. A key holds a subset; one that
// names none (every key made before permissions existed) holds them all.
const (
	PermSend   = "send"
	PermUpload = "upload"
	PermEdit   = "edit"
	PermRead   = "read"
	PermTopics = "topics"
)

// Permissions are every permission, in the order they are shown.
var Permissions = []string{PermSend, PermUpload, PermEdit, PermRead, PermTopics}

// ErrAdminPermissions: permissions are a scoped key's; an admin key posts
// nothing.
var ErrAdminPermissions = errors.New("an admin key has no permissions to change: it manages keys and never posts")

// ParsePermissions reads a list of permissions ("send,edit", or the
// words of a JSON array), in the order Permissions gives, once each. All
// of them is nil, as a key made before permissions existed holds.
func ParsePermissions(words []string) ([]string, error) {
	var set []string
	for _, w := range words {
		for _, p := range strings.Split(w, ",") {
			p = strings.ToLower(strings.TrimSpace(p))
			if p == "" {
				continue
			}
			if !slices.Contains(Permissions, p) {
				return nil, fmt.Errorf("unknown permission %q: the permissions are %s", p, strings.Join(Permissions, ", "))
			}
			if !slices.Contains(set, p) {
				set = append(set, p)
			}
		}
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("no permission given: name at least one of %s", strings.Join(Permissions, ", "))
	}
	if len(set) == len(Permissions) {
		return nil, nil
	}
	slices.SortFunc(set, func(a, b string) int { return slices.Index(Permissions, a) - slices.Index(Permissions, b) })
	return set, nil
}

// Allows says whether the key holds permission p.
func (e *Entry) Allows(p string) bool {
	return e.Permissions == nil || slices.Contains(e.Permissions, p)
}

// Granted is what the key may do: its permissions, or all of them.
func (e *Entry) Granted() []string {
	if e.Admin {
		return nil
	}
	if e.Permissions == nil {
		return slices.Clone(Permissions)
	}
	return slices.Clone(e.Permissions)
}

// SetPermissions changes what a scoped key may do; perms as
// ParsePermissions returns them (nil: all).
func (s *Store) SetPermissions(ctx context.Context, id string, perms []string) (Entry, error) {
	return s.changeScoped(ctx, id, func(c *Entry) { c.Permissions = slices.Clone(perms) })
}

// changeScoped changes a scoped key that may still be used; an admin
// key has no permissions or topics.
func (s *Store) changeScoped(ctx context.Context, id string, change func(*Entry)) (Entry, error) {
	var e Entry
	err := s.mutate(ctx, func(doc *document) (bool, error) {
		c, err := usableEntry(doc, id)
		if err != nil {
			return false, err
		}
		if c.Admin {
			return false, ErrAdminPermissions
		}
		change(c)
		e = c.clone()
		return true, nil
	})
	return e, err
}

package keystore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// legacyEntry is one key of the upstream Python service's clients.json.
type legacyEntry struct {
	ProposalNo json.RawMessage `json:"proposal_no"`
	Stream     *string         `json:"stream"`
	Admin      bool            `json:"admin"`
}

// ImportLegacy imports the upstream service's plain-key file. Each key is
// stored by its hash, so the old keys keep working; keys already present
// are skipped, so importing twice is harmless. The whole file is checked
// before anything is written.
func (s *Store) ImportLegacy(ctx context.Context, r io.Reader, createdBy string) (imported, skipped int, err error) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(r)
	if err := dec.Decode(&raw); err != nil {
		return 0, 0, fmt.Errorf("not a legacy clients.json (a JSON object of keys): %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return 0, 0, errors.New("not a legacy clients.json: data after the JSON object")
	}
	if raw == nil {
		return 0, 0, errors.New("not a legacy clients.json: expected a JSON object of keys")
	}
	if _, ok := raw["version"]; ok {
		return 0, 0, errors.New("this is already a store of this proxy, not a legacy clients.json")
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	news := make([]Entry, 0, len(keys))
	now := time.Now().UTC()
	for i, k := range keys {
		if strings.TrimSpace(k) == "" {
			return 0, 0, fmt.Errorf("entry %d: empty key", i+1)
		}
		var le legacyEntry
		if err := json.Unmarshal(raw[k], &le); err != nil {
			return 0, 0, fmt.Errorf("entry %d: expected an object with proposal_no and stream, or admin: %v", i+1, err)
		}
		e := Entry{KeyHash: HashKey(k), CreatedAt: now, CreatedBy: createdBy, Legacy: true}
		if le.Admin {
			e.Admin, e.Name = true, "legacy admin"
			news = append(news, e)
			continue
		}
		if le.Stream == nil || strings.TrimSpace(*le.Stream) == "" {
			return 0, 0, fmt.Errorf("entry %d: no stream (and not an admin)", i+1)
		}
		e.Stream = *le.Stream
		p, err := legacyProposal(le.ProposalNo)
		if err != nil {
			return 0, 0, fmt.Errorf("entry %d: %w", i+1, err)
		}
		e.ProposalNo = p
		e.Name = "legacy key for " + e.Stream
		if p != 0 {
			e.Name = "proposal " + strconv.FormatInt(p, 10)
		}
		news = append(news, e)
	}
	err = s.mutate(ctx, func(doc *document) (bool, error) {
		// A secret a rotation retired is present too: importing it again
		// would bring it back.
		have := make(map[string]bool, len(doc.Clients))
		for i := range doc.Clients {
			have[doc.Clients[i].KeyHash] = true
			for _, r := range doc.Clients[i].Retired {
				have[r.KeyHash] = true
			}
		}
		for _, e := range news {
			if have[e.KeyHash] {
				skipped++
				continue
			}
			id, err := uniqueID(doc)
			if err != nil {
				return false, err
			}
			e.ID = id
			doc.Clients = append(doc.Clients, e)
			have[e.KeyHash] = true
			imported++
		}
		return imported > 0, nil
	})
	if err != nil {
		return 0, 0, err
	}
	return imported, skipped, nil
}

// legacyProposal reads a proposal number written as a number or a string.
func legacyProposal(raw json.RawMessage) (int64, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return 0, nil
	}
	if uq, err := strconv.Unquote(s); err == nil {
		s = strings.TrimSpace(uq)
		if s == "" {
			return 0, nil
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("proposal_no %s is not a whole number", string(raw))
	}
	return n, nil
}

package emulator

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The default seed: one organization owner, the demo bot they own, and
// two public streams, so a scope test always has a stream the key must
// not reach. The keys are fixed so the demo and its README can name them;
// they are 32 alphanumerics like real Zulip keys.
const (
	DemoOwnerEmail  = "owner@zulip.example.com"
	DemoOwnerKey    = "demoownerapikey0123456789abcdefg"
	DemoBotEmail    = "demo-bot@zulip.example.com"
	DemoBotKey      = "demobotapikey0123456789abcdefghi"
	DemoStream      = "general"
	DemoOtherStream = "other"
)

// Zulip 10's defaults, which the emulator follows unless told otherwise.
const (
	DefaultRateLimit      = 200
	DefaultRateWindow     = time.Minute
	DefaultMaxUpload      = 25 << 20 // nginx's client_max_body_size in Zulip 10
	DefaultMaxMessages    = 100_000
	DefaultMaxLogEntries  = 100_000
	DefaultMaxUploadBytes = 256 << 20
	DefaultEditLimit      = 600 * time.Second // message_content_edit_limit_seconds

	maxContentLength = 10000 // MAX_MESSAGE_LENGTH, Unicode code points
	maxTopicLength   = 60    // MAX_TOPIC_NAME_LENGTH
	realmID          = 2
	realmString      = "zulip"
	emptyTopicName   = "general chat" // realm_empty_topic_display_name
	zulipVersion     = "10.2"
	featureLevel     = 372
)

// Emulator is an in-memory Zulip 10 organization behind an http.Handler.
// All methods are safe for concurrent use.
type Emulator struct {
	cfg config

	mu           sync.Mutex
	nextUserID   int64
	nextStreamID int64
	nextMsgID    int64
	users        map[int64]*user
	usersByKey   map[string]*user
	usersByEmail map[string]*user // lowercased
	streams      map[int64]*stream
	streamsByKey map[string]*stream // lowercased name
	msgs         []*message         // ascending id; oldest evicted first
	msgByID      map[int64]*message
	uploads      map[string]*upload // by path_id
	uploadOrder  []string
	lastUploadID int64
	uploadBytes  int64

	log   requestLog
	fault faultState
	// inFlight counts the API requests being handled: each is logged as
	// it ends, which for a caller that went away mid-body can be after
	// that caller has moved on.
	inFlight atomic.Int64
	// noStreamCreation is the realm's "who can create channels" set to
	// nobody: a subscribe to a stream that does not exist fails.
	noStreamCreation bool
}

type config struct {
	rateLimit      int
	rateWindow     time.Duration
	maxUpload      int64
	maxMessages    int
	maxLogEntries  int
	maxUploadBytes int64
	editLimit      time.Duration
	realmName      string
	seed           bool
	now            func() time.Time
}

// Option changes an Emulator's settings.
type Option func(*config)

// WithRateLimit sets Zulip's per-user API rate limit; n <= 0 disables it.
func WithRateLimit(n int, window time.Duration) Option {
	return func(c *config) { c.rateLimit, c.rateWindow = n, window }
}

// WithMaxUpload sets the request body cap answered with nginx's HTML 413.
func WithMaxUpload(bytes int64) Option { return func(c *config) { c.maxUpload = bytes } }

// WithMaxMessages bounds retained messages (oldest dropped first), so a
// load test through the emulator does not grow memory without end.
func WithMaxMessages(n int) Option { return func(c *config) { c.maxMessages = n } }

// WithMaxLogEntries bounds the request log (a ring: oldest dropped).
func WithMaxLogEntries(n int) Option { return func(c *config) { c.maxLogEntries = n } }

// WithMaxUploadBytes bounds the bytes of retained uploads (oldest dropped).
func WithMaxUploadBytes(n int64) Option { return func(c *config) { c.maxUploadBytes = n } }

// WithEditLimit sets how long after sending a sender may edit content;
// zero means no limit. Zulip's default is 10 minutes.
func WithEditLimit(d time.Duration) Option { return func(c *config) { c.editLimit = d } }

// WithRealmName sets the organization name shown by /server_settings.
func WithRealmName(name string) Option { return func(c *config) { c.realmName = name } }

// WithoutSeed starts with no users and no streams.
func WithoutSeed() Option { return func(c *config) { c.seed = false } }

// WithClock replaces time.Now, for tests of rate limits and edit limits.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// New returns an emulator with Zulip's defaults and, unless WithoutSeed,
// the demo seed: DemoOwnerEmail, DemoBotEmail (owned by the owner,
// subscribed to DemoStream), and public streams DemoStream and
// DemoOtherStream.
func New(opts ...Option) *Emulator {
	cfg := config{
		rateLimit:      DefaultRateLimit,
		rateWindow:     DefaultRateWindow,
		maxUpload:      DefaultMaxUpload,
		maxMessages:    DefaultMaxMessages,
		maxLogEntries:  DefaultMaxLogEntries,
		maxUploadBytes: DefaultMaxUploadBytes,
		editLimit:      DefaultEditLimit,
		realmName:      "Zulip emulator",
		seed:           true,
		now:            time.Now,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.maxMessages <= 0 {
		cfg.maxMessages = DefaultMaxMessages
	}
	if cfg.maxLogEntries <= 0 {
		cfg.maxLogEntries = DefaultMaxLogEntries
	}
	e := &Emulator{
		cfg:          cfg,
		nextUserID:   8,
		nextStreamID: 1,
		nextMsgID:    1,
		users:        map[int64]*user{},
		usersByKey:   map[string]*user{},
		usersByEmail: map[string]*user{},
		streams:      map[int64]*stream{},
		streamsByKey: map[string]*stream{},
		msgByID:      map[int64]*message{},
		uploads:      map[string]*upload{},
	}
	e.log.init(cfg.maxLogEntries)
	if cfg.seed {
		e.seedDemo()
	}
	return e
}

func (e *Emulator) seedDemo() {
	owner := must(e.AddUser(User{Email: DemoOwnerEmail, FullName: "Demo Owner", APIKey: DemoOwnerKey, IsAdmin: true}))
	bot := must(e.AddUser(User{Email: DemoBotEmail, FullName: "Demo Bot", APIKey: DemoBotKey, IsBot: true, OwnerID: owner.ID}))
	general := must(e.AddStream(DemoStream))
	must(e.AddStream(DemoOtherStream))
	if err := e.Subscribe(bot.ID, general); err != nil {
		panic(err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// User is a Zulip account as tests see it.
type User struct {
	ID       int64
	Email    string
	FullName string
	// APIKey is 32 ASCII letters and digits, as Zulip checks; AddUser
	// generates one when empty.
	APIKey  string
	IsBot   bool
	IsAdmin bool
	// OwnerID is a bot's owner, who receives its webhook messages that
	// name no stream.
	OwnerID int64
	Active  bool
}

type user struct {
	User
	rate limiter
}

// Stream is a Zulip stream (channel) as tests see it.
type Stream struct {
	ID          int64   `json:"id"`
	Name        string  `json:"name"`
	InviteOnly  bool    `json:"invite_only"`
	Description string  `json:"description,omitempty"`
	Subscribers []int64 `json:"subscribers"`
}

type stream struct {
	Stream
	subs   map[int64]bool
	topics map[string]*topic // by lowercased name
}

type topic struct {
	name  string
	maxID int64
	count int
}

var apiKeyFormat = regexp.MustCompile(`^[A-Za-z0-9]{32}$`)

// AddUser creates a user or bot. Email must be new; a bot's OwnerID must
// name an existing user. It returns the stored user with its id.
func (e *Emulator) AddUser(u User) (User, error) {
	u.Email = strings.TrimSpace(u.Email)
	if u.Email == "" || !strings.Contains(u.Email, "@") || strings.ContainsAny(u.Email, ": \t\r\n") {
		return User{}, fmt.Errorf("emulator: invalid email %q", u.Email)
	}
	if u.APIKey == "" {
		u.APIKey = newAPIKey()
	}
	if !apiKeyFormat.MatchString(u.APIKey) {
		return User{}, fmt.Errorf("emulator: api key for %s must be 32 ASCII letters and digits, as Zulip's are", u.Email)
	}
	if u.FullName == "" {
		u.FullName = strings.SplitN(u.Email, "@", 2)[0]
	}
	u.Active = true
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, dup := e.usersByEmail[strings.ToLower(u.Email)]; dup {
		return User{}, fmt.Errorf("emulator: user %s already exists", u.Email)
	}
	if _, dup := e.usersByKey[u.APIKey]; dup {
		return User{}, fmt.Errorf("emulator: api key of %s is already in use", u.Email)
	}
	if u.IsBot && u.OwnerID != 0 {
		if _, ok := e.users[u.OwnerID]; !ok {
			return User{}, fmt.Errorf("emulator: owner %d of bot %s does not exist", u.OwnerID, u.Email)
		}
	}
	u.ID = e.nextUserID
	e.nextUserID++
	su := &user{User: u}
	e.users[u.ID] = su
	e.usersByKey[u.APIKey] = su
	e.usersByEmail[strings.ToLower(u.Email)] = su
	return u, nil
}

// AddBot creates a bot owned by ownerID (0: no owner).
func (e *Emulator) AddBot(email, apiKey string, ownerID int64) (User, error) {
	return e.AddUser(User{Email: email, APIKey: apiKey, IsBot: true, OwnerID: ownerID})
}

// SetAPIKey replaces a user's key, as regenerating it in Zulip does.
func (e *Emulator) SetAPIKey(userID int64, key string) error {
	if !apiKeyFormat.MatchString(key) {
		return errors.New("emulator: api key must be 32 ASCII letters and digits")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	u, ok := e.users[userID]
	if !ok {
		return fmt.Errorf("emulator: no user %d", userID)
	}
	if other, dup := e.usersByKey[key]; dup && other != u {
		return errors.New("emulator: api key already in use")
	}
	delete(e.usersByKey, u.APIKey)
	u.APIKey = key
	e.usersByKey[key] = u
	return nil
}

// Deactivate makes a user's requests fail as Zulip's do for a
// deactivated account.
func (e *Emulator) Deactivate(userID int64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	u, ok := e.users[userID]
	if !ok {
		return fmt.Errorf("emulator: no user %d", userID)
	}
	u.Active = false
	return nil
}

// UserByEmail looks a user up (case-insensitively, as Zulip does).
func (e *Emulator) UserByEmail(email string) (User, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	u, ok := e.usersByEmail[strings.ToLower(strings.TrimSpace(email))]
	if !ok {
		return User{}, false
	}
	return u.User, true
}

// Users lists all users, by id.
func (e *Emulator) Users() []User {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]User, 0, len(e.users))
	for _, u := range e.users {
		out = append(out, u.User)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// AddStream creates a public stream and returns its id.
func (e *Emulator) AddStream(name string) (int64, error) {
	return e.addStream(Stream{Name: name})
}

// AddPrivateStream creates an invite-only stream and returns its id.
func (e *Emulator) AddPrivateStream(name string) (int64, error) {
	return e.addStream(Stream{Name: name, InviteOnly: true})
}

func (e *Emulator) addStream(s Stream) (int64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	st, err := e.createStreamLocked(s)
	if err != nil {
		return 0, err
	}
	return st.ID, nil
}

func (e *Emulator) createStreamLocked(s Stream) (*stream, error) {
	s.Name = strings.TrimSpace(s.Name)
	if err := checkStreamName(s.Name); err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	key := strings.ToLower(s.Name)
	if _, dup := e.streamsByKey[key]; dup {
		return nil, fmt.Errorf("emulator: stream %q already exists", s.Name)
	}
	s.ID = e.nextStreamID
	e.nextStreamID++
	s.Subscribers = nil
	st := &stream{Stream: s, subs: map[int64]bool{}, topics: map[string]*topic{}}
	e.streams[s.ID] = st
	e.streamsByKey[key] = st
	return st, nil
}

func checkStreamName(name string) error {
	switch {
	case name == "":
		return errors.New("channel name can't be empty")
	case len([]rune(name)) > 60:
		return errors.New("channel name too long (limit: 60 characters)")
	case strings.ContainsRune(name, 0):
		return errors.New("invalid character in channel name")
	}
	return nil
}

// StreamByName looks a stream up (case-insensitively, as Zulip does).
func (e *Emulator) StreamByName(name string) (Stream, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.streamsByKey[strings.ToLower(strings.TrimSpace(name))]
	if !ok {
		return Stream{}, false
	}
	return s.snapshot(), true
}

// Streams lists all streams, by id.
func (e *Emulator) Streams() []Stream {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Stream, 0, len(e.streams))
	for _, s := range e.streams {
		out = append(out, s.snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (s *stream) snapshot() Stream {
	c := s.Stream
	c.Subscribers = make([]int64, 0, len(s.subs))
	for id := range s.subs {
		c.Subscribers = append(c.Subscribers, id)
	}
	sort.Slice(c.Subscribers, func(i, j int) bool { return c.Subscribers[i] < c.Subscribers[j] })
	return c
}

// Subscribe adds a user to a stream.
func (e *Emulator) Subscribe(userID, streamID int64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.users[userID]; !ok {
		return fmt.Errorf("emulator: no user %d", userID)
	}
	s, ok := e.streams[streamID]
	if !ok {
		return fmt.Errorf("emulator: no stream %d", streamID)
	}
	s.subs[userID] = true
	return nil
}

// SetRateLimit changes the per-user limit at run time (n <= 0: off) and
// forgets the requests counted so far.
func (e *Emulator) SetRateLimit(n int, window time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cfg.rateLimit, e.cfg.rateWindow = n, window
	for _, u := range e.users {
		u.rate.reset()
	}
}

// SetStreamCreation says whether users may create streams (by
// subscribing to one that does not exist), as Zulip's realm setting for
// who can create channels does. Default: they may.
func (e *Emulator) SetStreamCreation(allowed bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.noStreamCreation = !allowed
}

func (e *Emulator) rateLimit() (int, time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cfg.rateLimit, e.cfg.rateWindow
}

const keyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func newAPIKey() string { return randomString(32) }

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = keyAlphabet[int(b[i])%len(keyAlphabet)]
	}
	return string(b)
}

// ServeHTTP answers Zulip's API under /api/v1/, uploads under
// /user_uploads/, and the emulator's own controls under /_emulator/.
// Anything else gets Zulip's 404.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.serve(w, r)
}

// InFlight is how many API requests the emulator is still handling. A
// test that must not count another's late request waits for 0 first.
func (e *Emulator) InFlight() int { return int(e.inFlight.Load()) }

// Handles reports whether path belongs to the emulator; the Caddy module
// passes other paths to the next handler. (Zulip's API is all under
// /api/v1/; the proxy's own /api/... endpoints are left alone.)
func Handles(path string) bool {
	return strings.HasPrefix(path, "/api/v1/") ||
		strings.HasPrefix(path, "/user_uploads/") || strings.HasPrefix(path, controlPrefix)
}

// DeleteStream archives a stream, as a Zulip administrator can: its
// messages go with it, and its name and id stop resolving. A stream made
// again under the same name gets a new id, which is what a proxy caching
// stream ids must notice.
func (e *Emulator) DeleteStream(id int64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.streams[id]
	if !ok {
		return fmt.Errorf("emulator: no stream %d", id)
	}
	delete(e.streams, id)
	delete(e.streamsByKey, strings.ToLower(s.Name))
	for _, m := range e.msgs {
		if m.Type == "stream" && m.StreamID == id {
			m.deleted = true
		}
	}
	return nil
}

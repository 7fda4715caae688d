// Package zulipspec checks HTTP exchanges against Zulip's own OpenAPI
// description (zulip.yaml, Zulip Server 10.2), for the tests of the
// client and the emulator. It is imported by tests only.
//
// The file is found through $ZULIP_OPENAPI, else at
// <repository root>/../shared/zulip-openapi/zulip.yaml. When it is
// missing, tests skip with a message saying where to put it, unless
// $ZULIP_OPENAPI_REQUIRED=1 (CI), which makes them fail instead.
package zulipspec

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// MissingMarker starts the skip message, so CI logs can be searched.
const MissingMarker = "ZULIP_OPENAPI_MISSING"

// routingBase is the single server the router knows; requests are
// re-addressed to it before routing, whatever port the test server has.
const routingBase = "http://zulip.test/api/v1"

// Spec is a loaded zulip.yaml with a router.
type Spec struct {
	Doc    *openapi3.T
	router routers.Router
	Path   string
}

var (
	loadOnce sync.Once
	loaded   *Spec
	loadErr  error
)

// Find returns the path of zulip.yaml, or an error saying where it was
// looked for.
func Find() (string, error) {
	if p := os.Getenv("ZULIP_OPENAPI"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("ZULIP_OPENAPI=%s: %w", p, err)
		}
		return p, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(filepath.Dir(root), "shared", "zulip-openapi", "zulip.yaml")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no zulip.yaml at %s (the repository's ../shared/zulip-openapi/) and ZULIP_OPENAPI is not set", p)
	}
	return p, nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Load returns the spec, loading it once per test binary. Without the
// file it skips tb (or fails it when ZULIP_OPENAPI_REQUIRED=1).
func Load(tb testing.TB) *Spec {
	tb.Helper()
	loadOnce.Do(func() {
		var p string
		p, loadErr = Find()
		if loadErr != nil {
			return
		}
		loaded, loadErr = load(p)
	})
	if loadErr != nil {
		msg := fmt.Sprintf("%s: %v. Put Zulip's zerver/openapi/zulip.yaml (Zulip Server 10.2) at ../shared/zulip-openapi/zulip.yaml beside the repository, or set ZULIP_OPENAPI to its path.", MissingMarker, loadErr)
		if os.Getenv("ZULIP_OPENAPI_REQUIRED") == "1" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return loaded
}

// LoadFile loads the spec at path, for code that runs outside a test
// (a TestMain); tests use Load.
func LoadFile(path string) (*Spec, error) { return load(path) }

// load works around the file's two known quirks with kin-openapi (see
// shared/zulip-openapi/SOURCE.md): doc.Validate() fails on the file's own
// example and on two conflicting paths, so it is not called; and the
// top-level security names "basicAuth" while the scheme is declared as
// "BasicAuth", so the scheme gets an alias.
func load(path string) (*Spec, error) {
	registerFormJSON.Do(func() { openapi3filter.RegisterBodyDecoder(formType, formJSONDecoder) })
	l := openapi3.NewLoader()
	doc, err := l.LoadFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", path, err)
	}
	if doc.Components == nil || doc.Components.SecuritySchemes["BasicAuth"] == nil {
		return nil, fmt.Errorf("%s: no BasicAuth security scheme; is this Zulip's zulip.yaml?", path)
	}
	doc.Components.SecuritySchemes["basicAuth"] = doc.Components.SecuritySchemes["BasicAuth"]
	doc.Servers = openapi3.Servers{{URL: routingBase}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("building router: %w", err)
	}
	return &Spec{Doc: doc, router: router, Path: path}, nil
}

// Exchange is one validated request, for validating its response.
type Exchange struct {
	input *openapi3filter.RequestValidationInput
	// Undocumented is set for paths zulip.yaml does not describe
	// (incoming webhooks): nothing was validated.
	Undocumented bool
}

// checkAuth is the AuthenticationFunc: the spec's security is HTTP Basic
// with email:api_key, so that is what every documented call must carry.
func checkAuth(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	h := in.RequestValidationInput.Request.Header.Get("Authorization")
	enc, ok := strings.CutPrefix(h, "Basic ")
	if !ok {
		return errors.New("no HTTP Basic Authorization header")
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || strings.Count(string(raw), ":") != 1 {
		return errors.New("Authorization is not base64(email:api_key)")
	}
	return nil
}

// noAuthOperations are documented without an exception to the global
// security but need no credentials: server_settings says so in its own
// description ("does not require any authentication at all").
var noAuthOperations = map[string]bool{"get-server-settings": true}

// ValidateRequest checks req against the spec. req.Body is read and
// replaced with an equivalent one. When the request is routed but does
// not validate, the Exchange is returned with the error, so the answer
// (typically Zulip's error for the bad request) can still be checked.
func (s *Spec) ValidateRequest(req *http.Request) (*Exchange, error) {
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	u, err := url.Parse(routingBase)
	if err != nil {
		return nil, err
	}
	rest, ok := strings.CutPrefix(req.URL.Path, "/api/v1")
	if !ok {
		return nil, fmt.Errorf("%s is not under /api/v1", req.URL.Path)
	}
	if strings.HasPrefix(rest, "/external/") {
		return &Exchange{Undocumented: true}, nil
	}
	u.Path += rest
	u.RawQuery = req.URL.RawQuery
	routed := req.Clone(req.Context())
	routed.URL = u
	routed.Host = u.Host
	routed.RequestURI = ""
	routed.Body = io.NopCloser(bytes.NewReader(body))
	route, pathParams, err := s.router.FindRoute(routed)
	if err != nil {
		return nil, fmt.Errorf("%s %s: not in Zulip's API description: %w", req.Method, req.URL.Path, err)
	}
	opts := &openapi3filter.Options{AuthenticationFunc: checkAuth, MultiError: true}
	if noAuthOperations[route.Operation.OperationID] {
		opts.AuthenticationFunc = openapi3filter.NoopAuthenticationFunc
	}
	in := &openapi3filter.RequestValidationInput{Request: routed, PathParams: pathParams, Route: route, Options: opts}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
		// The exchange is still usable for checking the answer.
		return &Exchange{input: in}, fmt.Errorf("%s %s: request does not match Zulip's API description: %w", req.Method, req.URL.Path, err)
	}
	return &Exchange{input: in}, nil
}

// CheckAnswer validates what was answered to x's request, as a client or
// a server-side check sees it. Answers that are not Zulip's JSON (nginx's
// HTML pages, the emulator's deliberate garbage) are left to the tests of
// those cases. checked says the answer matched a schema the operation
// documents, so callers can count that validation really ran.
func (s *Spec) CheckAnswer(x *Exchange, status int, header http.Header, body []byte) (checked bool, err error) {
	if x == nil || x.Undocumented || !isJSON(header.Get("Content-Type")) || header.Get("X-Emulator-Fault") == "garbage" {
		return false, nil
	}
	if err := s.ValidateResponse(x, status, header, body); err != nil {
		return false, fmt.Errorf("%w\nbody: %s", err, body)
	}
	return s.Documents(x, status), nil
}

// ValidateResponse checks an answer to x's request. Statuses the spec
// documents for the operation are checked against their schema; the
// errors every endpoint can give (401, 429), which the spec documents
// once in components instead of per operation, are checked against
// those components (see ValidateErrorBody).
func (s *Spec) ValidateResponse(x *Exchange, status int, header http.Header, body []byte) error {
	if x.Undocumented {
		return nil
	}
	switch status {
	case http.StatusUnauthorized:
		return s.ValidateErrorBody("CodedError", body)
	case http.StatusTooManyRequests:
		return s.ValidateErrorBody("RateLimitedError", body)
	}
	op := x.input.Route.Operation
	if status >= 400 && status < 500 && op.Responses.Status(status) == nil && op.Responses.Default() == nil {
		// An error status the operation does not list: it must still be
		// one of Zulip's documented common errors.
		if err := s.commonError(op.OperationID, status, body); err != nil {
			return fmt.Errorf("%s %s: %w", x.input.Request.Method, x.input.Request.URL.Path, err)
		}
		return nil
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: x.input,
		Status:                 status,
		Header:                 header,
		Options:                &openapi3filter.Options{MultiError: true},
	}
	in.SetBodyBytes(body)
	err := openapi3filter.ValidateResponse(context.Background(), in)
	if err == nil {
		return nil
	}
	if status >= 400 && status < 500 {
		if s.commonError(x.input.Route.Operation.OperationID, status, body) == nil {
			return nil
		}
	}
	return fmt.Errorf("%s %s: HTTP %d answer does not match Zulip's API description: %w",
		x.input.Request.Method, x.input.Request.URL.Path, status, err)
}

// Documents reports whether the spec has a response for x's status (so
// ValidateResponse checked a schema and not just let it through).
func (s *Spec) Documents(x *Exchange, status int) bool {
	if x.Undocumented {
		return false
	}
	if status >= 400 && status < 500 {
		return true // the operation's schema, or the common errors
	}
	r := x.input.Route.Operation.Responses
	return r.Status(status) != nil || r.Default() != nil
}

// ValidateErrorBody checks an error body against a components schema.
//
// Exception: RateLimitedError types "retry-after" as an integer, but
// Zulip sends seconds as a float (its own example in that schema is
// 28.706807374954224, which is also why doc.Validate() fails). A float
// there is accepted by checking the rest of the body with it removed.
func (s *Spec) ValidateErrorBody(schema string, body []byte) error {
	ref := s.Doc.Components.Schemas[schema]
	if ref == nil {
		return fmt.Errorf("no schema %s", schema)
	}
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%s body is not JSON: %w", schema, err)
	}
	if schema == "RateLimitedError" {
		ra, ok := v["retry-after"].(float64)
		if !ok || ra < 0 {
			return fmt.Errorf("RateLimitedError: retry-after %v is not a non-negative number", v["retry-after"])
		}
		delete(v, "retry-after")
	}
	if err := ref.Value.VisitJSON(v, openapi3.MultiErrors()); err != nil {
		return fmt.Errorf("%s: %w", schema, err)
	}
	return nil
}

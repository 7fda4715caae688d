package caddytest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// apiCheck validates every answer the suite gets from the bot and admin
// API against the OpenAPI description the proxy itself serves at
// /openapi.json, so the description cannot drift from what the proxy
// does. The description is fetched from the first running proxy that
// serves it.
var apiCheck struct {
	mu      sync.Mutex
	doc     *openapi3.T
	router  routers.Router
	checked int
	errors  []string
}

// loadAPIDoc fetches and parses the proxy's description. Called with
// apiCheck.mu held.
func loadAPIDoc() error {
	if apiCheck.router != nil {
		return nil
	}
	resp, err := client.Get(base + "/openapi.json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return fmt.Errorf("GET /openapi.json: %d %v", resp.StatusCode, err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		return badDoc{fmt.Errorf("parsing /openapi.json: %w", err)}
	}
	if err := doc.Validate(context.Background()); err != nil {
		return badDoc{fmt.Errorf("/openapi.json is not a valid description: %w", err)}
	}
	doc.Servers = openapi3.Servers{{URL: base}}
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		return err
	}
	apiCheck.doc, apiCheck.router = doc, r
	return nil
}

// badDoc is a description that was served but is broken.
type badDoc struct{ error }

// checkAnswer validates one exchange. Paths the description does not
// cover (Zulip's own API under /api/v1, the pages) are left out.
func checkAnswer(method, path string, reqHeader http.Header, status int, header http.Header, body []byte) {
	u, err := url.Parse(base + path)
	if err != nil || strings.HasPrefix(u.Path, "/api/v1/") {
		return
	}
	// The proxy answers only JSON; anything else came from another of
	// Caddy's handlers in front of it (a test's basic_auth or respond).
	if !strings.HasPrefix(header.Get("Content-Type"), "application/json") {
		return
	}
	apiCheck.mu.Lock()
	defer apiCheck.mu.Unlock()
	if err := loadAPIDoc(); err != nil {
		var bad badDoc
		if errors.As(err, &bad) && len(apiCheck.errors) == 0 {
			apiCheck.errors = append(apiCheck.errors, err.Error())
		}
		return // or no proxy serving it yet: the next answer tries again
	}
	// The description lists each endpoint once; every one also answers
	// under /api.
	if rest, ok := strings.CutPrefix(u.Path, "/api/"); ok {
		u.Path = "/" + rest
	}
	req, err := http.NewRequest(method, u.String(), nil)
	if err != nil {
		return
	}
	req.Header = reqHeader.Clone()
	route, params, err := apiCheck.router.FindRoute(req)
	if err != nil {
		if errors.Is(err, routers.ErrMethodNotAllowed) {
			return // 405s are documented per path, not per missing method
		}
		return
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{ExcludeRequestBody: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true}}
	// An accepted request must be one the description allows: a parameter
	// the proxy takes but the description lacks is drift too.
	if status < 300 {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			apiCheck.errors = append(apiCheck.errors, fmt.Sprintf("%s %s answered %d, but the request does not match /openapi.json: %v", method, path, status, err))
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		// Not the body: an answer may hold a new key.
		apiCheck.errors = append(apiCheck.errors, fmt.Sprintf("%s %s: answer %d does not match /openapi.json: %v", method, path, status, err))
		return
	}
	apiCheck.checked++
}

// apiCheckResult fails the run if any answer did not match.
func apiCheckResult() error {
	apiCheck.mu.Lock()
	defer apiCheck.mu.Unlock()
	if len(apiCheck.errors) > 0 {
		return fmt.Errorf("%d answers of the proxy do not match its /openapi.json:\n%s", len(apiCheck.errors), strings.Join(apiCheck.errors, "\n"))
	}
	// A run of chosen tests may have asked the API nothing; the whole
	// suite always does.
	if f := flag.Lookup("test.run"); apiCheck.checked == 0 && (f == nil || f.Value.String() == "") {
		return errors.New("no answer of the proxy was checked against its /openapi.json")
	}
	fmt.Fprintf(os.Stderr, "caddytest: %d answers of the proxy checked against its own /openapi.json\n", apiCheck.checked)
	return nil
}

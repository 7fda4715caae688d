package zulipproxy

import (
	"net/http"
	"net/url"
	"strconv"
)

// single returns the one value of a parameter. A repeated parameter is an
// error rather than a guess: Zulip reads the last value where Go reads the
// first, and a proxy that checks one value while Zulip acts on another is
// how scope checks get bypassed.
func single(vals url.Values, name string) (string, bool, *apiError) {
	vs, ok := vals[name]
	if !ok {
		return "", false, nil
	}
	if len(vs) != 1 {
		return "", true, errBadParam(name, "parameter '"+name+"' given more than once")
	}
	return vs[0], true, nil
}

// queryValues parses the query string strictly: a malformed query is a 400,
// not silently half-read.
func queryValues(r *http.Request) (url.Values, *apiError) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, newError(http.StatusBadRequest, codeBadRequest, "malformed query string")
	}
	return q, nil
}

// parseInt64Param parses a numeric parameter, naming it in the error.
func parseInt64Param(name, v string) (int64, *apiError) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, errBadParam(name, "parameter '"+name+"' must be an integer")
	}
	return n, nil
}

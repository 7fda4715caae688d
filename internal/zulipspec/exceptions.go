package zulipspec

import (
	"encoding/json"
	"fmt"
)

// Where zulip.yaml is narrower than real Zulip. Each exception below is
// an answer Zulip 10 really gives (from its server code) that the
// description does not allow; the emulator gives it too, so the checks
// would otherwise fail on faithful behaviour. Nothing else is excused.
//
//  1. Common errors. Zulip's error-handling page documents errors that
//     any endpoint can give ("Invalid API key", "Missing request
//     parameter(s)", "User not authorized for query"), but most
//     operations list only their own 400 schema. A 4xx answer that fails
//     the operation's schema is accepted when it is a CodedError or a
//     MissingArgumentError (REQUEST_VARIABLE_MISSING with var_name).
//
//  2. The 401 and 429 that every authenticated endpoint can give are
//     not listed per operation; they are checked against the
//     components CodedError and RateLimitedError (see ValidateResponse).
//
//  3. RateLimitedError types retry-after as an integer, Zulip sends a
//     float (see ValidateErrorBody).
//
//  4. The extra fields below, on error codes that carry them in Zulip's
//     server code but appear in no schema of the operation.
type extraFields struct {
	operation string // "" for any operation
	code      string
	fields    map[string]string // name -> JSON type
	why       string
}

var exceptions = []extraFields{
	{"send-message", "STREAM_DOES_NOT_EXIST", map[string]string{"stream_id": "number"},
		"a send to an unknown stream id; components has NonExistingChannelIdError, but send-message's 400 lists only the by-name variant"},
	{"", "REQUEST_CONFUSING_VAR", map[string]string{"var_name1": "string", "var_name2": "string"},
		"topic and subject (or two other aliases) given together: RequestConfusingParamsError, in no schema"},
	{"", "BAD_REQUEST", map[string]string{"var_name": "string"},
		"a parameter of the wrong type: typed_endpoint's ApiParamValidationError names it in var_name, in no schema"},
}

// commonError applies exceptions 1 and 4 to a 4xx body.
func (s *Spec) commonError(operation string, status int, body []byte) error {
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		return err
	}
	for _, name := range []string{"CodedError", "MissingArgumentError"} {
		if s.Doc.Components.Schemas[name].Value.VisitJSON(v) == nil {
			return nil
		}
	}
	code, _ := v["code"].(string)
	for _, ex := range exceptions {
		if ex.code != code || (ex.operation != "" && ex.operation != operation) {
			continue
		}
		rest := map[string]any{}
		ok := true
		for k, val := range v {
			typ, listed := ex.fields[k]
			if !listed {
				rest[k] = val
				continue
			}
			switch typ {
			case "number":
				_, ok = val.(float64)
			case "string":
				_, ok = val.(string)
			}
			if !ok {
				break
			}
		}
		if ok && s.Doc.Components.Schemas["CodedError"].Value.VisitJSON(rest) == nil {
			return nil
		}
	}
	return fmt.Errorf("HTTP %d: not a documented or excepted error", status)
}

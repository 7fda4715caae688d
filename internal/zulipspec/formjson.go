package zulipspec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
)

const formType = "application/x-www-form-urlencoded"

var registerFormJSON sync.Once

// formJSONDecoder decodes a form body some of whose fields Zulip's
// description says are JSON documents (an `encoding` with contentType
// application/json, such as subscribe's `subscriptions`, a list of
// objects). kin-openapi's form decoder refuses a list of objects; this
// decodes those fields as JSON and hands the others to it. It is
// registered for every form body, once, as kin-openapi keeps decoders by
// content type.
func formJSONDecoder(body io.Reader, h http.Header, schema *openapi3.SchemaRef, encFn openapi3filter.EncodingFn) (any, error) {
	raw, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	var jsonFields []string
	if schema != nil && schema.Value != nil && encFn != nil {
		for name := range schema.Value.Properties {
			if enc := encFn(name); enc != nil && enc.ContentType == "application/json" {
				jsonFields = append(jsonFields, name)
			}
		}
	}
	if len(jsonFields) == 0 {
		return openapi3filter.UrlencodedBodyDecoder(bytes.NewReader(raw), h, schema, encFn)
	}
	values, err := url.ParseQuery(string(raw))
	if err != nil {
		return nil, err
	}
	rest := openapi3.NewObjectSchema()
	rest.Properties = maps.Clone(schema.Value.Properties)
	for _, name := range jsonFields {
		delete(rest.Properties, name)
	}
	v, err := openapi3filter.UrlencodedBodyDecoder(bytes.NewReader(raw), h, rest.NewRef(), encFn)
	if err != nil {
		return nil, err
	}
	obj, _ := v.(map[string]any)
	if obj == nil {
		obj = map[string]any{}
	}
	slices.Sort(jsonFields)
	for _, name := range jsonFields {
		vs, ok := values[name]
		if !ok {
			continue
		}
		var x any
		if err := json.Unmarshal([]byte(vs[0]), &x); err != nil {
			return nil, fmt.Errorf("form field %q is not JSON: %w", name, err)
		}
		obj[name] = x
	}
	return obj, nil
}

package zulipproxy

import "testing"

func TestParseStreamRef(t *testing.T) {
	const name, id = "Beamline 3", int64(42)
	cases := []struct {
		to      string
		matches bool
		err     bool
	}{
		{"Beamline 3", true, false},
		{"beamline 3", true, false},
		{"  BEAMLINE 3 ", true, false},
		{`"Beamline 3"`, true, false},
		{`["Beamline 3"]`, true, false},
		{`[" beamline 3"]`, true, false},
		{"42", true, false},
		{"[42]", true, false},
		{" 42 ", true, false},
		{"other", false, false},
		{`["other"]`, false, false},
		{"2", false, false},
		{"[2]", false, false},
		{"true", false, false}, // stream id 1
		{"false", false, false},
		{"-42", false, false},
		{"42.0", false, true},
		{"null", false, true},
		{`{"id":42}`, false, true},
		{`["Beamline 3","other"]`, false, true},
		{"[]", false, true},
		{"[[42]]", false, true},
		{"Beamline 3x", false, false},
		{"Beamline", false, false},
	}
	for _, c := range cases {
		ref, err := parseStreamRef(c.to)
		if (err != nil) != c.err {
			t.Errorf("%q: error %v, want error %v", c.to, err, c.err)
			continue
		}
		if err == nil && ref.is(name, id) != c.matches {
			t.Errorf("%q: matches %v, want %v (%+v)", c.to, !c.matches, c.matches, ref)
		}
	}
	if ref, _ := parseStreamRef("true"); !ref.byID || ref.id != 1 {
		t.Errorf("true is %+v, want stream id 1 as Zulip reads it", ref)
	}
}

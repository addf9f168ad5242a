package sessions

import (
	"bytes"
	"encoding/json"

	"google.golang.org/protobuf/encoding/protowire"
)

// initialEventsEnd is the annotation of the BOOKMARK that ends a watch's
// initial events (sendInitialEvents=true).
const initialEventsEnd = "k8s.io/initial-events-end"

// eventInfo is what resuming a watch needs of one event. Its slices are
// of the event's bytes: copy what is kept.
type eventInfo struct {
	typ             []byte // ADDED, MODIFIED, DELETED, BOOKMARK, ERROR
	resourceVersion []byte // the object's; for a Table, its last row's
	initialEnd      bool   // a BOOKMARK that ends the initial events
}

// jsonEvent reads a JSON watch event's type and resourceVersion; rows
// are a Table's (kubectl get --watch asks for tables).
type jsonEvent struct {
	Type   string `json:"type"`
	Object struct {
		Metadata jsonMeta `json:"metadata"`
		Rows     []struct {
			Object struct {
				Metadata jsonMeta `json:"metadata"`
			} `json:"object"`
		} `json:"rows"`
	} `json:"object"`
}

type jsonMeta struct {
	ResourceVersion string `json:"resourceVersion"`
	Annotations     struct {
		InitialEventsEnd string `json:"k8s.io/initial-events-end"`
	} `json:"annotations"`
}

// info reads a JSON watch event the way the API server writes one,
// {"type":"…","object":{…,"metadata":{…,"resourceVersion":"…"…}…}}, by
// looking for the strings, not decoding the event: the type first, and
// the object's metadata before its spec and status (an escaped quote
// inside a string cannot look like either). An event that does not start
// so is decoded.
func (jsonFraming) info(event []byte) eventInfo {
	typ, ok := quoted(event, `{"type":"`)
	if !ok {
		return decodeJSONEvent(event)
	}
	rv, _ := quoted(event, `"resourceVersion":"`)
	return eventInfo{typ: typ, resourceVersion: rv,
		initialEnd: string(typ) == "BOOKMARK" && bytes.Contains(event, []byte(`"`+initialEventsEnd+`":"true"`))}
}

// quoted returns the string that follows the first key in b, up to its
// closing quote; a string with escapes in it is not one a type or a
// resourceVersion has.
func quoted(b []byte, key string) ([]byte, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return nil, false
	}
	b = b[i+len(key):]
	j := bytes.IndexByte(b, '"')
	if j < 0 || bytes.IndexByte(b[:j], '\\') >= 0 {
		return nil, false
	}
	return b[:j], true
}

func decodeJSONEvent(event []byte) eventInfo {
	var ev jsonEvent
	if json.Unmarshal(event, &ev) != nil {
		return eventInfo{}
	}
	info := eventInfo{typ: []byte(ev.Type), resourceVersion: []byte(ev.Object.Metadata.ResourceVersion),
		initialEnd: ev.Type == "BOOKMARK" && ev.Object.Metadata.Annotations.InitialEventsEnd == "true"}
	if n := len(ev.Object.Rows); n > 0 {
		if rv := ev.Object.Rows[n-1].Object.Metadata.ResourceVersion; rv != "" {
			info.resourceVersion = []byte(rv)
		}
	}
	return info
}

func (jsonFraming) each(b []byte, fn func([]byte)) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		fn(b[:i])
		b = b[i+1:]
	}
}

// info reads a protobuf watch event: a metav1.WatchEvent (type = 1,
// object = 2, a RawExtension whose raw = 1) whose object is "k8s\x00"
// and a runtime.Unknown (raw = 2) of the typed object, whose metadata is
// field 1 (ObjectMeta: resourceVersion = 6, annotations = 12).
func (protoFraming) info(frame []byte) eventInfo {
	ev := frame[4:]
	var info eventInfo
	info.typ = field(ev, 1)
	raw := field(field(ev, 2), 1)
	if !bytes.HasPrefix(raw, []byte("k8s\x00")) {
		return info
	}
	meta := field(field(raw[4:], 2), 1)
	info.resourceVersion = field(meta, 6)
	if string(info.typ) == "BOOKMARK" {
		eachField(meta, 12, func(entry []byte) {
			if string(field(entry, 1)) == initialEventsEnd && string(field(entry, 2)) == "true" {
				info.initialEnd = true
			}
		})
	}
	return info
}

func (protoFraming) each(b []byte, fn func([]byte)) {
	for len(b) > 0 {
		end := 4 + int(uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3]))
		fn(b[:end])
		b = b[end:]
	}
}

// field returns the last length-delimited field num of a protobuf
// message, or nil.
func field(msg []byte, num protowire.Number) []byte {
	var out []byte
	eachField(msg, num, func(v []byte) { out = v })
	return out
}

// eachField calls fn with each length-delimited field num of msg, and
// stops at the first malformed field.
func eachField(msg []byte, num protowire.Number, fn func([]byte)) {
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return
		}
		msg = msg[l:]
		if typ == protowire.BytesType && n == num {
			v, l := protowire.ConsumeBytes(msg)
			if l < 0 {
				return
			}
			fn(v)
			msg = msg[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, msg)
		if l < 0 {
			return
		}
		msg = msg[l:]
	}
}

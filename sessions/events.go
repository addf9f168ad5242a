package sessions

import (
	"bytes"
	"encoding/binary"
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
)

// status is a watch's ERROR event's object. A resumable one says that
// the watch's connection broke and could not be resumed here, so that a
// layer in front (the client proxy, in front of the relay) may try from
// where its client is, instead of ending the watch.
func status(code int, reason, msg string, resumable bool) *metav1.Status {
	st := &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Code: int32(code), Reason: metav1.StatusReason(reason), Message: msg,
	}
	if resumable {
		st.Details = &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: causeResumable,
			Message: "the watch's connection broke; a layer in front may watch again from the last resourceVersion it passed on"}}}
	}
	return st
}

// causeResumable is the cause type of a resumable ERROR event's Status.
const causeResumable = "ClusterconnectResumable"

// jsonFraming is a JSON watch stream: one JSON object a line, as the API
// server's encoder writes them (a newline inside a string is escaped).
type jsonFraming struct{}

func (jsonFraming) complete(b []byte) int { return bytes.LastIndexByte(b, '\n') + 1 }

func (jsonFraming) errorEvent(code int, reason, msg string, resumable bool) []byte {
	b, _ := json.Marshal(struct {
		Type   string         `json:"type"`
		Object *metav1.Status `json:"object"`
	}{"ERROR", status(code, reason, msg, resumable)})
	return append(b, '\n')
}

// protoFraming is a protobuf watch stream: each event a metav1.WatchEvent
// behind its length in four bytes, big-endian, its object encoded as the
// API server encodes objects (the "k8s\x00" prefix and a
// runtime.Unknown).
type protoFraming struct{}

func (protoFraming) complete(b []byte) int {
	done := 0
	for len(b)-done >= 4 {
		end := done + 4 + int(binary.BigEndian.Uint32(b[done:]))
		if end > len(b) || end < done {
			break
		}
		done = end
	}
	return done
}

// statusScheme knows metav1.Status, for the protobuf encoder.
var statusScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	return s
}()

func (protoFraming) errorEvent(code int, reason, msg string, resumable bool) []byte {
	var obj bytes.Buffer
	if err := protobuf.NewSerializer(statusScheme, statusScheme).Encode(status(code, reason, msg, resumable), &obj); err != nil {
		panic("sessions: encoding a Status: " + err.Error()) // a fixed type that always encodes
	}
	ev := metav1.WatchEvent{Type: "ERROR", Object: runtime.RawExtension{Raw: obj.Bytes()}}
	data, err := ev.Marshal()
	if err != nil {
		panic("sessions: encoding a WatchEvent: " + err.Error())
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(data))), data...)
}

package cli

import (
	"flag"
	"fmt"
	"strconv"
	"time"
)

// A bound flag is a number whose 0, on the command line, lifts what it
// bounds, while the packages' configs take 0 for their default and a
// value of their own (none) for "no bound". It stores none for 0 and
// refuses a negative value, so that no translation follows the parse.
type bound[T int | int64 | time.Duration] struct {
	p     *T
	none  T
	name  string
	zero  string // what 0 means, for the error
	parse func(string) (T, error)
}

func (b *bound[T]) String() string {
	if b.p == nil || *b.p == b.none {
		return "0"
	}
	if d, ok := any(*b.p).(time.Duration); ok {
		return d.String()
	}
	return fmt.Sprint(*b.p)
}

func (b *bound[T]) Set(s string) error {
	v, err := b.parse(s)
	switch {
	case err != nil:
		return err
	case v < 0:
		return fmt.Errorf("-%s must not be negative (0: %s)", b.name, b.zero)
	case v == 0:
		*b.p = b.none
	default:
		*b.p = v
	}
	return nil
}

// BoundVar defines an int flag whose 0 means none (zeroMeans says what
// that is, for -h and errors); p starts at def.
func BoundVar[T int | int64](fs *flag.FlagSet, p *T, name string, def, none T, zeroMeans, usage string) {
	*p = def
	fs.Var(&bound[T]{p: p, none: none, name: name, zero: zeroMeans, parse: func(s string) (T, error) {
		n, err := strconv.ParseInt(s, 0, 64)
		return T(n), err
	}}, name, usage+" (0: "+zeroMeans+")")
}

// DurationBoundVar is BoundVar for a duration.
func DurationBoundVar(fs *flag.FlagSet, p *time.Duration, name string, def, none time.Duration, zeroMeans, usage string) {
	*p = def
	fs.Var(&bound[time.Duration]{p: p, none: none, name: name, zero: zeroMeans, parse: time.ParseDuration}, name, usage+" (0: "+zeroMeans+")")
}

package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

func pct(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func report(lat []time.Duration, errs int64) {
	fmt.Printf("  %d ok, %d errors; latency p50 %s, p99 %s, p99.9 %s, max %s\n", len(lat), errs,
		pct(lat, 50).Round(time.Microsecond), pct(lat, 99).Round(time.Microsecond),
		pct(lat, 99.9).Round(time.Microsecond), pct(lat, 100).Round(time.Microsecond))
}

func maxOf(d []time.Duration) time.Duration {
	var m time.Duration
	for _, x := range d {
		m = max(m, x)
	}
	return m
}

// histogram prints reconnect times in one-second buckets.
func histogram(d []time.Duration) {
	buckets := map[int]int{}
	last := 0
	for _, x := range d {
		if x == 0 {
			continue
		}
		b := int(x / time.Second)
		buckets[b]++
		last = max(last, b)
	}
	top := 0
	for _, n := range buckets {
		top = max(top, n)
	}
	for b := 0; b <= last; b++ {
		bar := strings.Repeat("#", buckets[b]*50/max(top, 1))
		fmt.Printf("  %2d–%2ds %5d %s\n", b, b+1, buckets[b], bar)
	}
}

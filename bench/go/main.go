// bench-go: the Go peers of bench/bench.c, one figure a line:
//
//	RESULT <name> <value> <unit>
//
// Each figure is the median of the same number of repetitions as bench.c's.
package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

var quick bool

func reps() int {
	if quick {
		return 1
	}
	return 3
}

func result(name string, v float64, unit string) {
	fmt.Printf("RESULT %s %.3f %s\n", name, v, unit)
}

func measure(name string, fn func(n int) float64, n int, unit string) {
	fn(n/10 + 1)
	v := make([]float64, reps())
	for i := range v {
		v[i] = fn(n)
	}
	sort.Float64s(v)
	result(name, v[len(v)/2], unit)
}

func perOp(t0 time.Time, n int) float64 {
	return float64(time.Since(t0).Nanoseconds()) / float64(n)
}

func spawnWaitGroup(n int) float64 {
	t0 := time.Now()
	for done := 0; done < n; done += 1000 {
		var wg sync.WaitGroup
		for i := 0; i < 1000; i++ {
			wg.Add(1)
			go func() { wg.Done() }()
		}
		wg.Wait()
	}
	return perOp(t0, n)
}

func spawnErrgroup(n int) float64 {
	t0 := time.Now()
	for done := 0; done < n; done += 1000 {
		g, _ := errgroup.WithContext(context.Background())
		for i := 0; i < 1000; i++ {
			g.Go(func() error { return nil })
		}
		g.Wait()
	}
	return perOp(t0, n)
}

// One group, one child, wait: leash's spawn_lone_leash.
func spawnLone(n int) float64 {
	t0 := time.Now()
	for i := 0; i < n; i++ {
		g, _ := errgroup.WithContext(context.Background())
		g.Go(func() error { return nil })
		g.Wait()
	}
	return perOp(t0, n)
}

func roundtrip(n int) float64 {
	ping, pong := make(chan int), make(chan int)
	go func() {
		for i := 0; i < n; i++ {
			v := <-ping
			pong <- v
		}
	}()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		ping <- 1
		<-pong
	}
	return perOp(t0, n)
}

// A request into a buffered channel kept full (capacity 8), then its reply
// on an unbuffered one, as leash_bench's chan_full_reply_leash.
func fullReply(n int) float64 {
	req, rep := make(chan int, 8), make(chan int)
	for i := 0; i < 8; i++ {
		req <- i
	}
	go func() {
		for i := 0; i < n; i++ {
			rep <- <-req
		}
	}()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		req <- i
		<-rep
	}
	return perOp(t0, n)
}

func buffered(n int) float64 {
	c := make(chan int, 1024)
	t0 := time.Now()
	go func() {
		for i := 0; i < n; i++ {
			c <- i
		}
	}()
	for i := 0; i < n; i++ {
		<-c
	}
	return perOp(t0, n)
}

func select2(n int) float64 {
	a, b := make(chan int), make(chan int)
	t0 := time.Now()
	go func() {
		for i := 0; i < n/2; i++ {
			a <- i
		}
	}()
	go func() {
		for i := 0; i < n-n/2; i++ {
			b <- i
		}
	}()
	for i := 0; i < n; i++ {
		select {
		case <-a:
		case <-b:
		}
	}
	return perOp(t0, n)
}

var mu sync.Mutex
var counter int64

func mutexUncontended(n int) float64 {
	t0 := time.Now()
	for i := 0; i < n; i++ {
		mu.Lock()
		counter++
		mu.Unlock()
	}
	return perOp(t0, n)
}

// Both goroutines wait at a start line until the other is there, and the
// clock starts when the second arrives, as in leash_bench: contention needs
// both running.
func mutexContended(n int) float64 {
	var wg sync.WaitGroup
	var ready int32
	var t0 time.Time
	for k := 0; k < 2; k++ {
		wg.Add(1)
		go func() {
			if atomic.AddInt32(&ready, 1) == 2 {
				t0 = time.Now() // read after wg.Wait
			}
			for atomic.LoadInt32(&ready) < 2 {
				runtime.Gosched()
			}
			for i := 0; i < n/2; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	return perOp(t0, n)
}

func cancellation() {
	runs := 200
	if quick {
		runs = 20
	}
	never := make(chan int)
	v := make([]float64, runs)
	f := make([]float64, runs)
	for r := 0; r < runs; r++ {
		var last, first int64
		var wg sync.WaitGroup
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		for i := 0; i < 100; i++ {
			wg.Add(1)
			go func() {
				select {
				case <-never:
				case <-ctx.Done():
				}
				t := time.Since(t0).Nanoseconds()
				atomic.CompareAndSwapInt64(&first, 0, t)
				for {
					p := atomic.LoadInt64(&last)
					if t <= p || atomic.CompareAndSwapInt64(&last, p, t) {
						break
					}
				}
				wg.Done()
			}()
		}
		wg.Wait()
		cancel()
		v[r] = float64(atomic.LoadInt64(&last)-20*1000000) / 1000.0
		f[r] = float64(atomic.LoadInt64(&first)-20*1000000) / 1000.0
	}
	sort.Float64s(v)
	sort.Float64s(f)
	result("cancel_latency_p50_go", v[runs/2], "us")
	result("cancel_latency_p99_go", v[runs*99/100], "us")
	result("cancel_first_p50_go", f[runs/2], "us")
}

func wanted(name string) bool {
	any := false
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-") {
			continue
		}
		any = true
		if strings.Contains(name, a) {
			return true
		}
	}
	return !any
}

func main() {
	k := 1
	for _, a := range os.Args[1:] {
		if a == "--quick" {
			quick = true
			k = 10
		}
	}
	if wanted("spawn") {
		measure("spawn_join_go_waitgroup", spawnWaitGroup, 200000/k, "ns/task")
		measure("spawn_join_go_errgroup", spawnErrgroup, 200000/k, "ns/task")
		measure("spawn_lone_go", spawnLone, 200000/k, "ns/group")
	}
	if wanted("chan") {
		measure("chan_roundtrip_go", roundtrip, 200000/k, "ns/roundtrip")
		measure("chan_buffered_go", buffered, 2000000/k, "ns/elem")
		measure("chan_full_reply_go", fullReply, 200000/k, "ns/roundtrip")
	}
	if wanted("select") {
		measure("select2_go", select2, 400000/k, "ns/op")
	}
	if wanted("mutex") {
		measure("mutex_uncontended_go", mutexUncontended, 10000000/k, "ns/op")
		measure("mutex_contended_go", mutexContended, 4000000/k, "ns/op")
	}
	if wanted("cancel") {
		cancellation()
	}
}

// The CRI test bed's only image: "pause" (the pod sandbox, its entrypoint) waits for
// SIGTERM; "count" prints a counter that lives only in memory every 0.2 s, the state
// the pod checkpoint tests dump, and writes it to /count too: a restored container's
// output goes to a client that is gone, so the tests read the counter there; "admin SOCKET"
// plays a validator's admin socket (the safe shutdown tests): on "exit" it answers, takes a
// moment to shut down, removes the socket and exits 0, as agave-validator does; "hold MIB"
// fills MIB MiB of memory with pseudo-random bytes (no page zero, none alike: what a dump of a
// training process holds), writes MIB to /ready and waits for SIGTERM (bench/bench_restore.py).
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "count" {
		for n := 1; ; n++ {
			fmt.Println(n)
			_ = os.WriteFile("/count", []byte(fmt.Sprintln(n)), 0o644)
			time.Sleep(200 * time.Millisecond)
		}
	}
	if len(os.Args) > 2 && os.Args[1] == "admin" {
		admin(os.Args[2])
		return
	}
	if len(os.Args) > 2 && os.Args[1] == "hold" {
		held := hold(os.Args[2])
		_ = os.WriteFile("/ready", []byte(os.Args[2]+"\n"), 0o644)
		waitForStop()
		fmt.Println(len(held)) // keeps the memory reachable until the end
		return
	}
	waitForStop()
}

func waitForStop() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}

// hold returns mib MiB filled by xorshift64 (a word at a time: ~1 GiB/s, and no two pages alike).
func hold(mib string) []uint64 {
	n, err := strconv.Atoi(mib)
	if err != nil || n <= 0 {
		fmt.Fprintln(os.Stderr, "hold: MIB must be a positive number of MiB, not", mib)
		os.Exit(2)
	}
	words := make([]uint64, n<<17) // 1 MiB = 2^17 words of 8 bytes
	x := uint64(time.Now().UnixNano()) | 1
	for i := range words {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		words[i] = x
	}
	return words
}

func admin(path string) {
	_ = os.Remove(path) // a socket left by the previous run of this container
	listener, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("admin socket ready")
	for {
		conn, err := listener.Accept()
		if err != nil {
			continue
		}
		line, _ := bufio.NewReader(conn).ReadString('\n')
		if strings.TrimSpace(line) == "exit" {
			_, _ = conn.Write([]byte("exiting\n"))
			time.Sleep(time.Second)
			_ = os.Remove(path)
			os.Exit(0)
		}
		_ = conn.Close()
	}
}

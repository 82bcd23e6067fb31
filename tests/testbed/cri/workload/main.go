// The CRI test bed's only image: "pause" (the pod sandbox, its entrypoint) waits for
// SIGTERM; "count" prints a counter that lives only in memory every 0.2 s, the state
// the pod checkpoint tests dump, and writes it to /count too: a restored container's
// output goes to a client that is gone, so the tests read the counter there.
package main

import (
	"fmt"
	"os"
	"os/signal"
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
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}

package runtime

import (
	goruntime "runtime"
	"sync"
)

// Every container-init is forked from one OS thread that never exits. Pdeathsig fires when
// the *thread* that forked the child exits, not the process (golang/go#27505), and Go ends
// a thread whenever a goroutine that locked it returns (podnet's UTS setup does): forking
// from an arbitrary thread could SIGKILL a container at a random later moment.
var (
	forkOnce sync.Once
	forkReq  chan func()
)

func onForkThread(f func()) {
	forkOnce.Do(func() {
		forkReq = make(chan func())
		go func() {
			goruntime.LockOSThread() // never unlocked: this thread only forks
			for g := range forkReq {
				g()
			}
		}()
	})
	done := make(chan struct{})
	forkReq <- func() { f(); close(done) }
	<-done
}

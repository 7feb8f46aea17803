// Package kubelet is a process kubelet for the cluster's one Node: it registers the Node,
// keeps its Lease, and runs the pods bound to it as processes (runtime, podnet, volumes).
package kubelet

import (
	"context"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/runtime"
)

// Config is what Run needs.
type Config struct {
	Dir                 string
	Kubeconfig          string
	NodeName            string
	VolumeRefreshPeriod time.Duration
	RepoRoot            string
}

// DefaultVolumeRefreshPeriod is the kubelet's syncFrequency default
// (pkg/kubelet/apis/config/v1beta1/defaults.go).
const DefaultVolumeRefreshPeriod = 60 * time.Second

// Kubelet is the running node agent.
type Kubelet struct {
	cfg      Config
	client   kubernetes.Interface
	rt       Runtime
	net      Net
	services listersv1.ServiceLister
	started  metav1.Time

	mu      sync.Mutex
	workers map[string]*podWorker
	wg      sync.WaitGroup
}

// Run registers the Node and runs its pods until ctx ends; then it kills every container
// (bounded) and tears down their networks.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Dir == "" || cfg.Kubeconfig == "" {
		return fmt.Errorf("kubelet: Config needs Dir and Kubeconfig")
	}
	if cfg.NodeName == "" {
		cfg.NodeName = ranges.NodeName
	}
	if cfg.VolumeRefreshPeriod <= 0 {
		cfg.VolumeRefreshPeriod = DefaultVolumeRefreshPeriod
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubelet: kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	rc.Timeout = 30 * time.Second
	rc.QPS, rc.Burst = 50, 100
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubelet: client: %w", err)
	}
	if cfg.RepoRoot != "" {
		runtime.SetRepoRoot(cfg.RepoRoot)
	}
	return run(ctx, cfg, client, realRuntime{}, realNet{})
}

func run(ctx context.Context, cfg Config, client kubernetes.Interface, rt Runtime, nt Net) error {
	k := &Kubelet{cfg: cfg, client: client, rt: rt, net: nt, workers: map[string]*podWorker{}, started: metav1.Now()}
	for _, d := range []string{"pods", "logs"} {
		if err := os.MkdirAll(cfg.Dir+"/kubelet/"+d, 0o755); err != nil {
			return fmt.Errorf("kubelet: %w", err)
		}
	}
	if err := retry(ctx, func() error {
		err := k.registerNode(ctx)
		if err != nil {
			k.logf("%v (retrying)", err)
		}
		return err
	}); err != nil {
		return fmt.Errorf("kubelet: register node: %w", err)
	}
	k.logf("node %s registered", cfg.NodeName)
	go k.heartbeat(ctx)

	svcFactory := informers.NewSharedInformerFactory(client, 0)
	k.services = svcFactory.Core().V1().Services().Lister()
	podFactory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	podInf := podFactory.Core().V1().Pods().Informer()
	if _, err := podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { k.podChanged(ctx, o) },
		UpdateFunc: func(_, o any) { k.podChanged(ctx, o) },
		DeleteFunc: func(o any) { k.podGone(o) },
	}); err != nil {
		return fmt.Errorf("kubelet: pod informer: %w", err)
	}
	svcFactory.Start(ctx.Done())
	svcFactory.WaitForCacheSync(ctx.Done())
	podFactory.Start(ctx.Done())
	<-ctx.Done()
	podFactory.Shutdown()
	svcFactory.Shutdown()
	k.wg.Wait()
	return nil
}

func (k *Kubelet) podChanged(ctx context.Context, o any) {
	pod, ok := o.(*v1.Pod)
	if !ok || ctx.Err() != nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	w := k.workers[string(pod.UID)]
	if w == nil {
		if pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
			if pod.DeletionTimestamp != nil {
				go k.deletePod(ctx, pod)
			}
			return
		}
		w = newPodWorker(k, pod)
		k.workers[string(pod.UID)] = w
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			w.run(ctx)
			k.mu.Lock()
			delete(k.workers, string(pod.UID))
			k.mu.Unlock()
		}()
		return
	}
	w.update(pod)
}

func (k *Kubelet) podGone(o any) {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	pod, ok := o.(*v1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	w := k.workers[string(pod.UID)]
	k.mu.Unlock()
	if w != nil {
		w.forceStop()
	}
}

func (k *Kubelet) logf(format string, args ...any) {
	log.Printf("kubelet: "+format, args...)
}

// retry calls f until it succeeds or ctx ends (at most about a minute).
func retry(ctx context.Context, f func() error) error {
	var err error
	for i := 0; i < 60; i++ {
		if err = f(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return err
}

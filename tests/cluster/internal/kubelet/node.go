package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

// RefreshAnnotation on the Node publishes the volume refresh period in seconds.
const RefreshAnnotation = "wss-cluster.test/volume-refresh-seconds"

const (
	apiTimeout     = 10 * time.Second
	leaseDuration  = 40 // pkg/kubelet/apis/config/v1beta1/defaults.go NodeLeaseDurationSeconds
	leaseRenew     = 10 * time.Second
	statusInterval = 60 * time.Second
)

func (k *Kubelet) capacity() v1.ResourceList {
	mem := int64(0)
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				mem = kb * 1024
			}
		}
	}
	return v1.ResourceList{
		v1.ResourceCPU:              *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		v1.ResourceMemory:           *resource.NewQuantity(mem, resource.BinarySI),
		v1.ResourcePods:             *resource.NewQuantity(110, resource.DecimalSI),
		v1.ResourceEphemeralStorage: resource.MustParse("20Gi"),
	}
}

func (k *Kubelet) nodeStatus() v1.NodeStatus {
	now := metav1.Now()
	cond := func(t v1.NodeConditionType, s v1.ConditionStatus, reason, msg string) v1.NodeCondition {
		return v1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: k.started}
	}
	return v1.NodeStatus{
		Capacity:    k.capacity(),
		Allocatable: k.capacity(),
		Addresses: []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: ranges.NodeIPv4},
			{Type: v1.NodeInternalIP, Address: ranges.NodeIPv6},
			{Type: v1.NodeHostName, Address: k.cfg.NodeName},
		},
		// pkg/kubelet/nodestatus/setters.go: the four conditions a kubelet reports.
		Conditions: []v1.NodeCondition{
			cond(v1.NodeMemoryPressure, v1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
			cond(v1.NodeDiskPressure, v1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
			cond(v1.NodePIDPressure, v1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
			cond(v1.NodeReady, v1.ConditionTrue, "KubeletReady", "wss-cluster process kubelet is posting ready status"),
		},
		NodeInfo: v1.NodeSystemInfo{
			OperatingSystem: "linux", Architecture: runtime.GOARCH,
			KubeletVersion: "v1.37.2", ContainerRuntimeVersion: "wss-cluster://0.1",
		},
		DaemonEndpoints: v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: 10250}},
	}
}

// registerNode creates the Node (pkg/kubelet/kubelet_node_status.go registerWithAPIServer)
// or, when it exists, updates its status and annotation.
func (k *Kubelet) registerNode(ctx context.Context) error {
	refresh := strconv.Itoa(int(k.cfg.VolumeRefreshPeriod / time.Second))
	node := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: k.cfg.NodeName,
			Labels: map[string]string{
				"kubernetes.io/hostname": k.cfg.NodeName, "kubernetes.io/os": "linux",
				"kubernetes.io/arch": runtime.GOARCH,
			},
			Annotations: map[string]string{RefreshAnnotation: refresh},
		},
		Spec:   v1.NodeSpec{PodCIDR: ranges.PodCIDRv4, PodCIDRs: []string{ranges.PodCIDRv4, ranges.PodCIDRv6}},
		Status: k.nodeStatus(),
	}
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	_, err := k.client.CoreV1().Nodes().Create(cctx, node, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create node %s: %w", k.cfg.NodeName, err)
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{RefreshAnnotation: refresh}}})
	if _, err := k.client.CoreV1().Nodes().Patch(cctx, k.cfg.NodeName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("annotate node %s: %w", k.cfg.NodeName, err)
	}
	return k.updateNodeStatus(ctx)
}

func (k *Kubelet) updateNodeStatus(ctx context.Context) error {
	patch, _ := json.Marshal(map[string]any{"status": k.nodeStatus()})
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	// A JSON merge patch replaces the lists: a strategic one merges addresses by type and
	// would fold the two InternalIPs (IPv4, IPv6) into one.
	_, err := k.client.CoreV1().Nodes().Patch(cctx, k.cfg.NodeName, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("node status: %w", err)
	}
	return nil
}

// heartbeat renews the Lease every 10 s (pkg/kubelet/nodelease and
// k8s.io/component-helpers/apimachinery/lease) and posts the status every minute.
func (k *Kubelet) heartbeat(ctx context.Context) {
	t := time.NewTicker(leaseRenew)
	defer t.Stop()
	lastStatus := time.Now()
	for {
		if err := k.renewLease(ctx); err != nil && ctx.Err() == nil {
			k.logf("lease: %v", err)
		}
		if time.Since(lastStatus) >= statusInterval {
			if err := k.updateNodeStatus(ctx); err != nil && ctx.Err() == nil {
				k.logf("%v", err)
			}
			lastStatus = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (k *Kubelet) renewLease(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	leases := k.client.CoordinationV1().Leases(v1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(cctx, k.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		dur := int32(leaseDuration)
		holder := k.cfg.NodeName
		_, err = leases.Create(cctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: k.cfg.NodeName, Namespace: v1.NamespaceNodeLease},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, RenewTime: &now},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	_, err = leases.Update(cctx, l, metav1.UpdateOptions{})
	return err
}

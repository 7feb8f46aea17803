// Package ranges names every address, name and port the one-node cluster uses, in one place.
//
// Every range lives only on this machine: the pod range on the bridge and in the pods'
// network namespaces, the Service and LoadBalancer ranges on the cluster's own devices, each
// covered by a blackhole route so that an address nobody holds is dropped here instead of
// following the host's default route.
package ranges

const (
	// Bridge is the host-side bridge every pod's veth is attached to.
	Bridge = "wsscl0"
	// ServiceDevice holds the ClusterIPs and LoadBalancer IPs the Service proxy listens on.
	ServiceDevice = "wsscl-svc"
	// NetnsPrefix starts the name of every network namespace the cluster creates.
	NetnsPrefix = "wsscl-"
	// VethPrefix starts the host-side name of every pod's veth.
	VethPrefix = "wsv"

	// NodeName is the one Node's name.
	NodeName = "wss-node"
	// NodeIPv4 is the bridge's address: the Node's InternalIP, the apiserver's advertise
	// address (the `kubernetes` Endpoints), the pods' default gateway.
	NodeIPv4 = "10.244.0.1"
	// NodeIPv6 is the bridge's IPv6 address and the pods' IPv6 gateway.
	NodeIPv6 = "fd10:244::1"
	// PodCIDRv4 and PodCIDRv6 are the pod ranges (the Node's spec.podCIDRs).
	PodCIDRv4 = "10.244.0.0/24"
	PodCIDRv6 = "fd10:244::/64"
	// ServiceCIDR is the apiserver's --service-cluster-ip-range.
	ServiceCIDR = "10.96.0.0/16"
	// KubernetesServiceIP is the first address of ServiceCIDR, the `kubernetes` Service.
	KubernetesServiceIP = "10.96.0.1"
	// DNSServiceIP is the kube-dns Service's ClusterIP, written into every pod's resolv.conf.
	DNSServiceIP = "10.96.0.10"
	// LoadBalancerCIDR is where LoadBalancer Services get status.loadBalancer.ingress[0].ip.
	LoadBalancerCIDR = "10.250.0.0/24"

	// APIServerPort is the apiserver's secure port on NodeIPv4 and 127.0.0.1.
	APIServerPort = 6443
	// ClusterDomain is the DNS domain of Services and pods.
	ClusterDomain = "cluster.local"
)

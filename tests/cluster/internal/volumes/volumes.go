// Package volumes lays out a pod's volumes as the kubelet does and keeps them fresh.
package volumes

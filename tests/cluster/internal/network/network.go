// Package network makes the cluster's host-side network: the pod bridge, the device that holds
// Service and LoadBalancer addresses, and the blackhole routes that keep every packet here.
package network

import (
	"errors"
	"net/netip"
)

// Network is what Setup made.
type Network struct{}

// Setup creates the bridge, the service device, the routes and sysctls (stub).
func Setup() (*Network, error) { return nil, errors.New("network: not implemented") }

// AddServiceIP makes ip local so a listener can bind it (stub).
func (n *Network) AddServiceIP(ip netip.Addr) error { return errors.New("network: not implemented") }

// RemoveServiceIP undoes AddServiceIP (stub).
func (n *Network) RemoveServiceIP(ip netip.Addr) error { return errors.New("network: not implemented") }

// Close removes what Setup made (stub).
func (n *Network) Close() error { return nil }

// Cleanup removes everything the cluster's network may have left, by name (stub).
func Cleanup() error { return nil }

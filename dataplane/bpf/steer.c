// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// twill's XDP steering program: per attached interface, redirect to the
// interface's AF_XDP socket what is the dataplane's and pass the rest to the
// kernel. One program is loaded once and attached to every interface; its maps
// are shared and updated at run time by the dataplane (dataplane/src/io/xdp.rs,
// whose #[repr(C)] structs mirror the ones below: keep them in step).
//
// - uplink: VXLAN to our UDP port on a node address; Service VIPs (any port for
//   a VIP the node does not own, VIP:port:proto for one it does, e.g. an
//   externalIP equal to the node IP); the NodePort range (except ports the
//   kernel has a socket for and no Service serves: healthCheckNodePorts) and
//   the SNAT port range on node addresses (TCP/UDP/SCTP), echo replies whose
//   identifier is in
//   the SNAT range, ICMP errors about a packet sent from an SNAT port (or with
//   an echo identifier in the range). Everything else (ARP/ND, SSH, kubelet, API server, the
//   kernel's own connections) goes to the kernel untouched.
// - pod port: everything, except traffic addressed to the node's own addresses
//   (kubelet probes, host <-> pod), ARP replies and IPv6 neighbor
//   advertisements (the kernel resolving the pod), and ARP requests / neighbor
//   solicitations for a node address; NodePorts, VIP:port entries and SNAT
//   ports on a node address still go to the dataplane (pod -> nodeIP:NodePort,
//   a backend's reply to a NodePort or hairpin connection SNATed to the node).
//
// IPv4 addresses are keyed as IPv4-mapped IPv6 (::ffff:a.b.c.d).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MODE_UPLINK 1
#define MODE_POD 2

#define IPPROTO_SCTP_ 132
#define ETH_P_ARP_ 0x0806
#define ARPOP_REQUEST_ 1
#define ARPOP_REPLY_ 2
#define ICMP_ECHOREPLY_ 0
#define ICMPV6_ECHO_REPLY_ 129
#define NDISC_NEIGHBOUR_SOLICITATION_ 135
#define NDISC_NEIGHBOUR_ADVERTISEMENT_ 136

// Per-interface configuration, keyed by ifindex. An interface without an
// entry passes everything (attached but not yet configured, or being removed).
struct iface_cfg {
	__u32 mode;     // MODE_UPLINK or MODE_POD
	__u32 xsk_base; // its queue q's socket sits at xsks[xsk_base + q]
};

// Node-wide steering parameters (host byte order), one entry.
struct steer_cfg {
	__u16 vxlan_port;
	__u16 nodeport_lo;
	__u16 nodeport_hi;
	__u16 snat_lo;
	__u16 snat_hi;
	__u16 pad;
};

struct addr_key {
	__u8 addr[16];
};

// A VIP: port 0 and proto 0 mean every packet to the address. The all-zero
// address with a port and protocol is a served NodePort (on every node
// address); no VIP is the unspecified address.
struct vip_key {
	__u8 addr[16];
	__u16 port; // host byte order
	__u8 proto;
	__u8 pad;
};

enum {
	STAT_REDIRECT = 0, // handed to an AF_XDP socket
	STAT_PASS = 1,     // not the dataplane's: to the kernel
	STAT_NO_SOCKET = 2, // the dataplane's, but no socket on that queue: to the kernel
	STAT_UNKNOWN_IFACE = 3, // no iface_cfg entry: to the kernel
	STAT_MAX = 4,
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct iface_cfg);
} ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct steer_cfg);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct vip_key);
	__type(value, __u8);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct addr_key);
	__type(value, __u8);
} node_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

// What the parser found: the destination address, and the L4 protocol and
// destination port when there is a usable L4 header (not a later fragment).
struct pkt {
	struct addr_key dst;
	__u8 has_l4;
	__u8 proto;
	__u16 dport; // host order; the ICMP echo identifier for echo replies
	__u8 icmp_type;
	__u8 is_arp;
	__u16 arp_op;
	struct addr_key nd_target; // ARP target IP / NS target
	__u8 has_target;
	// An ICMP error: the quoted packet's source port (or echo identifier),
	// i.e. the port of ours it is about.
	__u8 has_inner;
	__u16 inner_sport;
};

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&stats, &idx);
	if (c)
		*c += 1;
}

static __always_inline void v4_mapped(struct addr_key *k, const void *a4)
{
	__builtin_memset(k->addr, 0, 10);
	k->addr[10] = 0xff;
	k->addr[11] = 0xff;
	__builtin_memcpy(&k->addr[12], a4, 4);
}

static __always_inline int is_node_addr(const struct addr_key *k)
{
	return bpf_map_lookup_elem(&node_addrs, k) != NULL;
}

static __always_inline int in_range(__u16 v, __u16 lo, __u16 hi)
{
	return lo != 0 && v >= lo && v <= hi;
}

static __always_inline int has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP_;
}

// Reads the L4 fields at `l4` (TCP/UDP/SCTP ports share the layout; ICMP's
// type and identifier). Returns 0 if the header is truncated.
// The source port (or echo request identifier) of the packet quoted by an
// ICMP error, whose inner L4 header starts at `il4`.
static __always_inline void inner_port(struct pkt *p, __u8 proto, __u8 *il4, void *end)
{
	if ((void *)(il4 + 8) > end)
		return;
	if (has_ports(proto)) {
		p->inner_sport = ((__u16)il4[0] << 8) | il4[1];
		p->has_inner = 1;
	} else if ((proto == IPPROTO_ICMP && il4[0] == 8) ||
		   (proto == IPPROTO_ICMPV6 && il4[0] == 128)) {
		p->inner_sport = ((__u16)il4[4] << 8) | il4[5];
		p->has_inner = 1;
	}
}

// ICMPv4 destination unreachable, time exceeded, parameter problem; ICMPv6
// the same and packet too big: they quote the packet they are about.
static __always_inline void parse_icmp_error(struct pkt *p, __u8 *h, void *end)
{
	if (p->proto == IPPROTO_ICMP) {
		if (h[0] != 3 && h[0] != 11 && h[0] != 12)
			return;
		struct iphdr *iip = (void *)(h + 8);
		if ((void *)(iip + 1) > end)
			return;
		__u32 iihl = (iip->ihl * 4) & 0x3c;
		if (iihl < sizeof(*iip))
			return;
		if (iip->frag_off & bpf_htons(0x1fff))
			return;
		inner_port(p, iip->protocol, (__u8 *)iip + iihl, end);
	} else {
		if (h[0] < 1 || h[0] > 4)
			return;
		struct ipv6hdr *iip6 = (void *)(h + 8);
		if ((void *)(iip6 + 1) > end)
			return;
		inner_port(p, iip6->nexthdr, (__u8 *)(iip6 + 1), end);
	}
}

static __always_inline int parse_l4(struct pkt *p, void *l4, void *end)
{
	if (has_ports(p->proto)) {
		struct udphdr *u = l4;
		if ((void *)(u + 1) > end)
			return 0;
		p->dport = bpf_ntohs(u->dest);
		p->has_l4 = 1;
	} else if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
		__u8 *h = l4;
		if ((void *)(h + 8) > end)
			return 0;
		p->icmp_type = h[0];
		p->dport = ((__u16)h[4] << 8) | h[5];
		p->has_l4 = 1;
		if (p->proto == IPPROTO_ICMPV6 &&
		    (h[0] == NDISC_NEIGHBOUR_SOLICITATION_ ||
		     h[0] == NDISC_NEIGHBOUR_ADVERTISEMENT_)) {
			if ((void *)(h + 24) > end)
				return 0;
			__builtin_memcpy(p->nd_target.addr, h + 8, 16);
			p->has_target = 1;
		}
		parse_icmp_error(p, h, end);
	}
	return 1;
}

// Parses Ethernet + ARP / IPv4 / IPv6. Returns 0 for frames the program does
// not understand (other ethertypes, VLAN tags, truncated headers).
static __always_inline int parse(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return 0;
	__u16 et = bpf_ntohs(eth->h_proto);

	if (et == ETH_P_ARP_) {
		// Ethernet/IPv4 ARP: htype(2) ptype(2) hlen(1) plen(1) op(2)
		// sha(6) spa(4) tha(6) tpa(4).
		__u8 *a = (void *)(eth + 1);
		if ((void *)(a + 28) > end)
			return 0;
		p->is_arp = 1;
		p->arp_op = ((__u16)a[6] << 8) | a[7];
		v4_mapped(&p->nd_target, a + 24);
		p->has_target = 1;
		return 1;
	}
	if (et == ETH_P_IP) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return 0;
		__u32 ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return 0;
		v4_mapped(&p->dst, &ip->daddr);
		p->proto = ip->protocol;
		if (ip->frag_off & bpf_htons(0x1fff))
			return 1; // a later fragment: no L4 header
		void *l4 = (void *)ip + ihl;
		if (l4 > end)
			return 1;
		parse_l4(p, l4, end);
		return 1;
	}
	if (et == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return 0;
		__builtin_memcpy(p->dst.addr, &ip6->daddr, 16);
		p->proto = ip6->nexthdr;
		// Extension headers (fragments included) leave has_l4 unset:
		// only address-based rules apply to them.
		parse_l4(p, ip6 + 1, end);
		return 1;
	}
	return 0;
}

static __always_inline int is_vip(const struct pkt *p)
{
	struct vip_key k = {};
	__builtin_memcpy(k.addr, p->dst.addr, 16);
	if (bpf_map_lookup_elem(&vips, &k))
		return 1;
	if (!p->has_l4 || !has_ports(p->proto))
		return 0;
	k.port = p->dport;
	k.proto = p->proto;
	return bpf_map_lookup_elem(&vips, &k) != NULL;
}

// A NodePort some Service serves (ours even if a kernel socket has the port,
// as kube-proxy's DNAT comes before the socket).
static __always_inline int is_node_port(const struct pkt *p)
{
	struct vip_key k = {};
	k.port = p->dport;
	k.proto = p->proto;
	return bpf_map_lookup_elem(&vips, &k) != NULL;
}

static __always_inline int is_v4_mapped(const struct addr_key *k)
{
	return k->addr[0] == 0 && k->addr[1] == 0 && k->addr[2] == 0 && k->addr[3] == 0 &&
	       k->addr[4] == 0 && k->addr[5] == 0 && k->addr[6] == 0 && k->addr[7] == 0 &&
	       k->addr[8] == 0 && k->addr[9] == 0 && k->addr[10] == 0xff && k->addr[11] == 0xff;
}

// Whether the kernel has a socket for the destination (address, port): a
// listener such as twill-control's healthCheckNodePort server, whose port
// the API server takes from the NodePort range. The source is left empty: a
// listener is found whatever the peer (and the kernel then finds the
// connection's own socket).
static __always_inline int kernel_socket(struct xdp_md *ctx, const struct pkt *p)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 size;
	if (is_v4_mapped(&p->dst)) {
		__builtin_memcpy(&t.ipv4.daddr, &p->dst.addr[12], 4);
		t.ipv4.dport = bpf_htons(p->dport);
		size = sizeof(t.ipv4);
	} else {
		__builtin_memcpy(t.ipv6.daddr, p->dst.addr, 16);
		t.ipv6.dport = bpf_htons(p->dport);
		size = sizeof(t.ipv6);
	}
	if (p->proto == IPPROTO_TCP)
		sk = bpf_sk_lookup_tcp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
	else if (p->proto == IPPROTO_UDP)
		sk = bpf_sk_lookup_udp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
	else
		return 0;
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

// Traffic to a node address that is nevertheless the dataplane's.
static __always_inline int node_port_for_us(struct xdp_md *ctx, const struct pkt *p,
					    const struct steer_cfg *c, int uplink)
{
	if (!p->has_l4)
		return 0;
	if (has_ports(p->proto)) {
		// A port of the range that no Service serves stays ours (an
		// established flow of a NodePort just removed keeps its
		// translation) unless the kernel has a socket for it.
		if (is_node_port(p))
			return 1;
		if (in_range(p->dport, c->nodeport_lo, c->nodeport_hi))
			return !kernel_socket(ctx, p);
		// Replies to what the dataplane SNATed to a node address: from
		// outside (masquerade), and from a pod (NodePort with
		// externalTrafficPolicy Cluster, hairpin). The kernel's own
		// connections (kubelet probes) use ports outside this range.
		if (in_range(p->dport, c->snat_lo, c->snat_hi))
			return 1;
		return uplink && p->proto == IPPROTO_UDP && c->vxlan_port &&
		       p->dport == c->vxlan_port;
	}
	if (uplink && (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6)) {
		__u8 reply = p->proto == IPPROTO_ICMP ? ICMP_ECHOREPLY_ : ICMPV6_ECHO_REPLY_;
		if (p->icmp_type == reply && in_range(p->dport, c->snat_lo, c->snat_hi))
			return 1;
		// An error about a packet we sent from an SNAT port (path MTU,
		// unreachable): the dataplane translates it back to the pod.
		return p->has_inner && in_range(p->inner_sport, c->snat_lo, c->snat_hi);
	}
	return 0;
}

static __always_inline int uplink_wants(struct xdp_md *ctx, const struct pkt *p,
					const struct steer_cfg *c)
{
	if (p->is_arp)
		return 0;
	if (is_vip(p))
		return 1;
	return is_node_addr(&p->dst) && node_port_for_us(ctx, p, c, 1);
}

static __always_inline int pod_wants(struct xdp_md *ctx, const struct pkt *p,
				     const struct steer_cfg *c)
{
	if (p->is_arp) {
		if (p->arp_op != ARPOP_REQUEST_)
			return 0; // replies: the kernel resolving the pod
		return !is_node_addr(&p->nd_target);
	}
	if (p->proto == IPPROTO_ICMPV6 && p->has_l4) {
		if (p->icmp_type == NDISC_NEIGHBOUR_ADVERTISEMENT_)
			return 0;
		if (p->icmp_type == NDISC_NEIGHBOUR_SOLICITATION_ && p->has_target &&
		    is_node_addr(&p->nd_target))
			return 0;
	}
	if (!is_node_addr(&p->dst))
		return 1;
	return is_vip(p) || node_port_for_us(ctx, p, c, 0);
}

SEC("xdp")
int twill_steer(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	struct iface_cfg *ic = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!ic) {
		count(STAT_UNKNOWN_IFACE);
		return XDP_PASS;
	}
	__u32 zero = 0;
	struct steer_cfg *c = bpf_map_lookup_elem(&config, &zero);
	if (!c)
		return XDP_PASS;

	struct pkt p = {};
	int ours;
	if (!parse(ctx, &p))
		ours = ic->mode == MODE_POD; // a pod's odd frames: the dataplane counts them
	else if (ic->mode == MODE_UPLINK)
		ours = uplink_wants(ctx, &p, c);
	else if (ic->mode == MODE_POD)
		ours = pod_wants(ctx, &p, c);
	else
		ours = 0;
	if (!ours) {
		count(STAT_PASS);
		return XDP_PASS;
	}
	__u32 slot = ic->xsk_base + ctx->rx_queue_index;
	long r = bpf_redirect_map(&xsks, slot, XDP_PASS);
	count(r == XDP_REDIRECT ? STAT_REDIRECT : STAT_NO_SOCKET);
	return r;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

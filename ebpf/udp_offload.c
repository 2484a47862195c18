// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// l7mp's UDP fast path: a tc ingress program that forwards the datagrams of an
// established UDP<->UDP session in the kernel. The proxy writes one entry per direction
// into a flow map: packets matching the entry's 4-tuple get their addresses and ports
// rewritten (checksums fixed incrementally) and are redirected, either back into the
// local stack (the new destination is local) or out of the interface the FIB chooses.
// Every entry counts its packets and bytes for the session's statistics. Packets that
// are not ours go on to the next program (TC_ACT_UNSPEC), so other tc users (another
// l7mp, a CNI) keep seeing them.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_FLOWS 65536
/* action.mode */
#define DELIVER_LOCAL 1 /* continue up this host's stack with the new addresses */
#define FORWARD 2       /* FIB lookup, new MACs, redirect out of the chosen interface */

struct flow4_key {
    __u32 saddr;
    __u32 daddr;
    __u16 sport;
    __u16 dport;
};

struct flow6_key {
    __u8 saddr[16];
    __u8 daddr[16];
    __u16 sport;
    __u16 dport;
};

struct flow4_action {
    __u32 saddr;
    __u32 daddr;
    __u16 sport;
    __u16 dport;
    __u32 ifindex;
    __u32 mode;
    __u32 pad;
    __u64 packets;
    __u64 bytes;
};

struct flow6_action {
    __u8 saddr[16];
    __u8 daddr[16];
    __u16 sport;
    __u16 dport;
    __u32 ifindex;
    __u32 mode;
    __u32 pad;
    __u64 packets;
    __u64 bytes;
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, MAX_FLOWS);
    __type(key, struct flow4_key);
    __type(value, struct flow4_action);
} L7MP_FLOWS4 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, MAX_FLOWS);
    __type(key, struct flow6_key);
    __type(value, struct flow6_action);
} L7MP_FLOWS6 SEC(".maps");

#define ETH_LEN sizeof(struct ethhdr)
#define IP4_CSUM (ETH_LEN + offsetof(struct iphdr, check))
#define IP4_SRC (ETH_LEN + offsetof(struct iphdr, saddr))
#define IP4_DST (ETH_LEN + offsetof(struct iphdr, daddr))
#define UDP4 (ETH_LEN + sizeof(struct iphdr))
#define IP6_SRC (ETH_LEN + offsetof(struct ipv6hdr, saddr))
#define IP6_DST (ETH_LEN + offsetof(struct ipv6hdr, daddr))
#define UDP6 (ETH_LEN + sizeof(struct ipv6hdr))

/* For a forwarded flow: where the rewritten packet leaves, looked up before anything
 * is changed, so that a failed lookup (no neighbour entry yet...) leaves the packet to
 * the proxy's sockets untouched. Returns 0 on success. */
static __always_inline int route4(struct __sk_buff *skb, __u32 saddr, __u32 daddr, struct bpf_fib_lookup *fib)
{
    fib->family = 2; /* AF_INET */
    fib->l4_protocol = IPPROTO_UDP;
    fib->ifindex = skb->ingress_ifindex;
    fib->tot_len = skb->len - ETH_LEN;
    fib->ipv4_src = saddr;
    fib->ipv4_dst = daddr;
    return bpf_fib_lookup(skb, fib, sizeof(*fib), BPF_FIB_LOOKUP_OUTPUT) == BPF_FIB_LKUP_RET_SUCCESS ? 0 : -1;
}

static __always_inline int route6(struct __sk_buff *skb, const __u8 *saddr, const __u8 *daddr, struct bpf_fib_lookup *fib)
{
    fib->family = 10; /* AF_INET6 */
    fib->l4_protocol = IPPROTO_UDP;
    fib->ifindex = skb->ingress_ifindex;
    fib->tot_len = skb->len - ETH_LEN;
    __builtin_memcpy(fib->ipv6_src, saddr, 16);
    __builtin_memcpy(fib->ipv6_dst, daddr, 16);
    return bpf_fib_lookup(skb, fib, sizeof(*fib), BPF_FIB_LOOKUP_OUTPUT) == BPF_FIB_LKUP_RET_SUCCESS ? 0 : -1;
}

/* Sends the rewritten packet on: up this host's stack, or out with the new MACs. */
static __always_inline int deliver(struct __sk_buff *skb, __u32 mode, struct bpf_fib_lookup *fib)
{
    if (mode == DELIVER_LOCAL)
        return TC_ACT_OK; /* the rewritten packet is received right here: done */
    if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), fib->dmac, ETH_ALEN, 0) < 0 ||
        bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_source), fib->smac, ETH_ALEN, 0) < 0)
        return TC_ACT_SHOT;
    return bpf_redirect(fib->ifindex, 0);
}

static __always_inline int udp4(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct iphdr *ip = data + ETH_LEN;
    if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
        return TC_ACT_UNSPEC;
    if (ip->frag_off & bpf_htons(0x3fff)) /* fragments take the slow path */
        return TC_ACT_UNSPEC;
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > end)
        return TC_ACT_UNSPEC;
    struct flow4_key key = {
        .saddr = ip->saddr, .daddr = ip->daddr, .sport = udp->source, .dport = udp->dest};
    struct flow4_action *act = bpf_map_lookup_elem(&L7MP_FLOWS4, &key);
    if (!act)
        return TC_ACT_UNSPEC;
    __u16 has_csum = udp->check;
    __u32 len = bpf_ntohs(udp->len) - sizeof(struct udphdr);
    __u32 saddr = act->saddr, daddr = act->daddr, mode = act->mode;
    __u16 sport = act->sport, dport = act->dport;
    struct bpf_fib_lookup fib = {};
    if (mode != DELIVER_LOCAL && route4(skb, saddr, daddr, &fib) < 0)
        return TC_ACT_UNSPEC;
    __sync_fetch_and_add(&act->packets, 1);
    __sync_fetch_and_add(&act->bytes, len);
    __u64 csum_flags = BPF_F_MARK_MANGLED_0;
    if (has_csum) {
        bpf_l4_csum_replace(skb, UDP4 + offsetof(struct udphdr, check), key.saddr, saddr, csum_flags | BPF_F_PSEUDO_HDR | 4);
        bpf_l4_csum_replace(skb, UDP4 + offsetof(struct udphdr, check), key.daddr, daddr, csum_flags | BPF_F_PSEUDO_HDR | 4);
        bpf_l4_csum_replace(skb, UDP4 + offsetof(struct udphdr, check), key.sport, sport, csum_flags | 2);
        bpf_l4_csum_replace(skb, UDP4 + offsetof(struct udphdr, check), key.dport, dport, csum_flags | 2);
    }
    bpf_l3_csum_replace(skb, IP4_CSUM, key.saddr, saddr, 4);
    bpf_l3_csum_replace(skb, IP4_CSUM, key.daddr, daddr, 4);
    bpf_skb_store_bytes(skb, IP4_SRC, &saddr, 4, 0);
    bpf_skb_store_bytes(skb, IP4_DST, &daddr, 4, 0);
    bpf_skb_store_bytes(skb, UDP4 + offsetof(struct udphdr, source), &sport, 2, 0);
    bpf_skb_store_bytes(skb, UDP4 + offsetof(struct udphdr, dest), &dport, 2, 0);
    return deliver(skb, mode, &fib);
}

static __always_inline int udp6(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ipv6hdr *ip6 = data + ETH_LEN;
    if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_UDP)
        return TC_ACT_UNSPEC;
    struct udphdr *udp = (void *)(ip6 + 1);
    if ((void *)(udp + 1) > end)
        return TC_ACT_UNSPEC;
    struct flow6_key key = {};
    __builtin_memcpy(key.saddr, &ip6->saddr, 16);
    __builtin_memcpy(key.daddr, &ip6->daddr, 16);
    key.sport = udp->source;
    key.dport = udp->dest;
    struct flow6_action *act = bpf_map_lookup_elem(&L7MP_FLOWS6, &key);
    if (!act)
        return TC_ACT_UNSPEC;
    __u32 len = bpf_ntohs(udp->len) - sizeof(struct udphdr);
    struct flow6_action a = *act;
    struct bpf_fib_lookup fib = {};
    if (a.mode != DELIVER_LOCAL && route6(skb, a.saddr, a.daddr, &fib) < 0)
        return TC_ACT_UNSPEC;
    __sync_fetch_and_add(&act->packets, 1);
    __sync_fetch_and_add(&act->bytes, len);
    /* IPv6 UDP always has a checksum: adjust it for every changed 32-bit word. */
    __u32 *os = (__u32 *)key.saddr, *od = (__u32 *)key.daddr, *ns = (__u32 *)a.saddr, *nd = (__u32 *)a.daddr;
    for (int i = 0; i < 4; i++) {
        bpf_l4_csum_replace(skb, UDP6 + offsetof(struct udphdr, check), os[i], ns[i], BPF_F_PSEUDO_HDR | 4);
        bpf_l4_csum_replace(skb, UDP6 + offsetof(struct udphdr, check), od[i], nd[i], BPF_F_PSEUDO_HDR | 4);
    }
    bpf_l4_csum_replace(skb, UDP6 + offsetof(struct udphdr, check), key.sport, a.sport, 2);
    bpf_l4_csum_replace(skb, UDP6 + offsetof(struct udphdr, check), key.dport, a.dport, 2);
    bpf_skb_store_bytes(skb, IP6_SRC, a.saddr, 16, 0);
    bpf_skb_store_bytes(skb, IP6_DST, a.daddr, 16, 0);
    bpf_skb_store_bytes(skb, UDP6 + offsetof(struct udphdr, source), &a.sport, 2, 0);
    bpf_skb_store_bytes(skb, UDP6 + offsetof(struct udphdr, dest), &a.dport, 2, 0);
    return deliver(skb, a.mode, &fib);
}

SEC("classifier")
int l7mp_udp(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return TC_ACT_UNSPEC;
    if (eth->h_proto == bpf_htons(ETH_P_IP))
        return udp4(skb);
    if (eth->h_proto == bpf_htons(ETH_P_IPV6))
        return udp6(skb);
    return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";

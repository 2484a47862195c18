//! Kernel offload of UDP sessions (the program in `ebpf/udp_offload.c`, loaded with
//! aya). When it is active, a UDP<->UDP session with nothing in-process between its
//! two sockets installs one flow per direction; from then on the kernel rewrites and
//! redirects its datagrams, and the proxy only reads the flows' counters. A session
//! that ends removes its flows. Without the program (built without clang), without
//! CAP_BPF/CAP_NET_ADMIN, or with `admin.offload: disable`, everything stays in
//! userspace and `l7mp_offload_active` says 0.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::{SchedClassifier, TcAttachType};

/// Values of `action.mode` in the kernel program.
const DELIVER_LOCAL: u32 = 1;
const FORWARD: u32 = 2;

/// A flow's key in the kernel's LRU map: the packet's addresses (network order) as
/// they arrive. `A` is `u32` for IPv4, `[u8; 16]` for IPv6, as `ebpf/udp_offload.c`
/// declares `flow4_key` and `flow6_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlowKey<A> {
    saddr: A,
    daddr: A,
    sport: u16,
    dport: u16,
}

/// What the kernel rewrites a flow's packets to, and the counters it keeps
/// (`flow4_action`, `flow6_action`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct FlowAction<A> {
    saddr: A,
    daddr: A,
    sport: u16,
    dport: u16,
    ifindex: u32,
    mode: u32,
    pad: u32,
    packets: u64,
    bytes: u64,
}

impl<A> FlowAction<A> {
    fn new(saddr: A, daddr: A, sport: u16, dport: u16, mode: u32) -> Self {
        FlowAction {
            saddr,
            daddr,
            sport,
            dport,
            ifindex: 0,
            mode,
            pad: 0,
            packets: 0,
            bytes: 0,
        }
    }
}

type Flow4Key = FlowKey<u32>;
type Flow6Key = FlowKey<[u8; 16]>;
type Flow4Action = FlowAction<u32>;
type Flow6Action = FlowAction<[u8; 16]>;

// SAFETY: plain C structs without padding holes that matter to the kernel, as the
// program declares them.
unsafe impl aya::Pod for Flow4Key {}
unsafe impl aya::Pod for Flow4Action {}
unsafe impl aya::Pod for Flow6Key {}
unsafe impl aya::Pod for Flow6Action {}

/// One direction of a session: packets `from -> to` become `new_from -> new_to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub new_from: SocketAddr,
    pub new_to: SocketAddr,
}

struct Loaded {
    _ebpf: aya::Ebpf,
    flows4: BpfHashMap<MapData, Flow4Key, Flow4Action>,
    flows6: BpfHashMap<MapData, Flow6Key, Flow6Action>,
    interfaces: Vec<String>,
}

pub struct Offload {
    loaded: Mutex<Option<Loaded>>,
    /// `l7mp_offload_active`.
    gauge: prometheus::IntGauge,
    /// Under `no_init`: the program was already tried (once is enough, even if it failed).
    tried: std::sync::atomic::AtomicBool,
    /// Why offload is not active, when it is not.
    reason: Mutex<String>,
}

#[cfg(l7mp_ebpf)]
static PROGRAM: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/udp_offload.o"
)));
#[cfg(not(l7mp_ebpf))]
static PROGRAM: Option<&[u8]> = None;

/// Every interface of the host's network namespace.
fn all_interfaces() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl Offload {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Loaded>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Off until configured; `gauge` says whether it is on.
    pub fn new(gauge: prometheus::IntGauge) -> Offload {
        Offload {
            loaded: Mutex::new(None),
            gauge,
            tried: Default::default(),
            reason: Mutex::new("admin.offload is disable".into()),
        }
    }

    pub fn active(&self) -> bool {
        self.lock().is_some()
    }

    /// Whether sessions can be offloaded now. Under `no_init` the first session that
    /// could be offloaded has the program loaded, on the blocking pool (loading and
    /// attaching take milliseconds no I/O worker should wait for); that session stays
    /// in userspace, the ones after it are offloaded once the program is in.
    pub fn ready(self: &Arc<Self>, mode: &str, interfaces: Option<&serde_json::Value>) -> bool {
        if mode == "no_init" && !self.tried.swap(true, std::sync::atomic::Ordering::Relaxed) {
            let interfaces = interfaces.cloned();
            let this = self.clone();
            tokio::task::spawn_blocking(move || this.configure("init", interfaces.as_ref()));
        }
        self.active()
    }

    /// Why offload is off (empty when it is on).
    pub fn reason(&self) -> String {
        if self.active() {
            String::new()
        } else {
            self.reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        }
    }

    fn set_reason(&self, reason: String) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }

    /// Puts `admin.offload` and `admin.offload_ifs` into effect. Failing to load or
    /// attach is not an error for the proxy: it logs why and forwards in userspace.
    pub fn configure(&self, mode: &str, interfaces: Option<&serde_json::Value>) {
        let wanted = match interfaces {
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(one)) if one != "all" => vec![one.clone()],
            _ => all_interfaces(),
        };
        let mut loaded = self.lock();
        if mode == "disable" {
            // A later `no_init` tries the program afresh.
            self.tried
                .store(false, std::sync::atomic::Ordering::Relaxed);
            if loaded.take().is_some() {
                tracing::info!("kernel offload disabled");
            }
            drop(loaded);
            self.set_reason("admin.offload is disable".into());
            self.gauge.set(0);
            return;
        }
        if loaded.as_ref().is_some_and(|l| l.interfaces == wanted) {
            return;
        }
        *loaded = None;
        match Self::load(&wanted) {
            Ok(l) => {
                tracing::info!("kernel offload active on {}", wanted.join(", "));
                *loaded = Some(l);
                self.gauge.set(1);
            }
            Err(e) => {
                tracing::warn!("kernel offload unavailable, forwarding in userspace: {e}");
                drop(loaded);
                self.set_reason(e);
                self.gauge.set(0);
            }
        }
    }

    fn load(interfaces: &[String]) -> Result<Loaded, String> {
        let program = PROGRAM.ok_or("this build has no kernel program (built without clang)")?;
        let mut ebpf = aya::Ebpf::load(program).map_err(|e| {
            format!("loading the kernel program: {e} (needs CAP_BPF and CAP_NET_ADMIN)")
        })?;
        let classifier: &mut SchedClassifier = ebpf
            .program_mut("l7mp_udp")
            .ok_or("the kernel program has no l7mp_udp")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        classifier
            .load()
            .map_err(|e| format!("verifying the kernel program: {e}"))?;
        for name in interfaces {
            // TCX links (kernel >= 6.6) go away with the process. Classic tc filters do
            // not: take out one a crashed l7mp left behind, and make sure the clsact
            // qdisc is there (both fail harmlessly where TCX is used).
            let _ =
                aya::programs::tc::qdisc_detach_program(name, TcAttachType::Ingress, "l7mp_udp");
            let _ = aya::programs::tc::qdisc_add_clsact(name);
            classifier
                .attach(name, TcAttachType::Ingress)
                .map_err(|e| format!("attaching to {name}: {e}"))?;
        }
        let flows4 =
            BpfHashMap::try_from(ebpf.take_map("L7MP_FLOWS4").ok_or("no L7MP_FLOWS4 map")?)
                .map_err(|e| e.to_string())?;
        let flows6 =
            BpfHashMap::try_from(ebpf.take_map("L7MP_FLOWS6").ok_or("no L7MP_FLOWS6 map")?)
                .map_err(|e| e.to_string())?;
        Ok(Loaded {
            _ebpf: ebpf,
            flows4,
            flows6,
            interfaces: interfaces.to_vec(),
        })
    }

    /// Installs a flow. The new destination decides the delivery: a loopback address
    /// continues up the local stack, anything else goes out where the FIB says.
    pub fn install(&self, flow: Flow) -> Result<(), String> {
        let mut guard = self.lock();
        let loaded = guard.as_mut().ok_or("offload is not active")?;
        let mode = if flow.new_to.ip().is_loopback() {
            DELIVER_LOCAL
        } else {
            FORWARD
        };
        let (sport, dport) = (flow.new_from.port().to_be(), flow.new_to.port().to_be());
        match (key(&flow), flow.new_from.ip(), flow.new_to.ip()) {
            (Some(Key::V4(k)), IpAddr::V4(c), IpAddr::V4(d)) => {
                let (saddr, daddr) = (u32::from(c).to_be(), u32::from(d).to_be());
                let action = FlowAction::new(saddr, daddr, sport, dport, mode);
                loaded
                    .flows4
                    .insert(k, action, 0)
                    .map_err(|e| e.to_string())
            }
            (Some(Key::V6(k)), IpAddr::V6(c), IpAddr::V6(d)) => {
                let action = FlowAction::new(c.octets(), d.octets(), sport, dport, mode);
                loaded
                    .flows6
                    .insert(k, action, 0)
                    .map_err(|e| e.to_string())
            }
            _ => Err("a flow mixes IPv4 and IPv6".into()),
        }
    }

    /// Removes a flow (gone already, e.g. evicted or offload disabled, is fine).
    pub fn remove(&self, flow: &Flow) {
        let mut guard = self.lock();
        let Some(loaded) = guard.as_mut() else { return };
        let _ = match key(flow) {
            Some(Key::V4(k)) => loaded.flows4.remove(&k),
            Some(Key::V6(k)) => loaded.flows6.remove(&k),
            None => Ok(()),
        };
    }

    /// Packets and bytes the kernel forwarded for a flow; `None` once it is gone.
    pub fn counters(&self, flow: &Flow) -> Option<(u64, u64)> {
        let guard = self.lock();
        let loaded = guard.as_ref()?;
        match key(flow)? {
            Key::V4(k) => loaded.flows4.get(&k, 0).ok().map(|v| (v.packets, v.bytes)),
            Key::V6(k) => loaded.flows6.get(&k, 0).ok().map(|v| (v.packets, v.bytes)),
        }
    }
}

/// The map key of a flow's packets, in network byte order.
enum Key {
    V4(Flow4Key),
    V6(Flow6Key),
}

fn key(flow: &Flow) -> Option<Key> {
    let (sport, dport) = (flow.from.port().to_be(), flow.to.port().to_be());
    match (flow.from.ip(), flow.to.ip()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => Some(Key::V4(FlowKey {
            saddr: u32::from(a).to_be(),
            daddr: u32::from(b).to_be(),
            sport,
            dport,
        })),
        (IpAddr::V6(a), IpAddr::V6(b)) => Some(Key::V6(FlowKey {
            saddr: a.octets(),
            daddr: b.octets(),
            sport,
            dport,
        })),
        _ => None,
    }
}

//! A node's shared-memory file made for a test in a temporary directory:
//! a published snapshot (two Services, a remote node, two pods), this
//! process registered as the dataplane, two workers' stats blocks, both
//! Services' counters and two conntrack flows, as the real processes would
//! leave them.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use dataplane::config::{MacSpec, PodSection, RemoteSection};
use dataplane::conntrack::{FlowKey, Timeouts};
use dataplane::lb::{BackendSpec, ServiceSpec, VipKind};
use dataplane::pipeline::{Counters, DropReason};
use dataplane::proto;
use dataplane::route::Prefix;
use dataplane::state::shm::{monotonic_ns, Layout, PortCounters, PortKind, Publisher, Role, Shm};
use dataplane::state::snapshot::Snapshot;

static N: AtomicU32 = AtomicU32::new(0);

/// A temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "twill-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn layout() -> Layout {
    Layout {
        workers: 2,
        ports: 4,
        conntrack_capacity: 1024,
        slot_bytes: 1 << 16,
        slots: 3,
        trace_records: 64,
        services: 64,
    }
}

fn backend(ip: [u8; 4], port: u16, ready: bool, local: bool) -> BackendSpec {
    BackendSpec {
        ip: IpAddr::V4(ip.into()),
        port,
        ready,
        serving: ready,
        terminating: !ready,
        local,
    }
}

pub fn snapshot() -> Snapshot {
    Snapshot {
        revision: 7,
        built_ns: 1,
        services: vec![
            ServiceSpec {
                name: "default/web:http".into(),
                proto: proto::TCP,
                port: 80,
                vips: vec![
                    (IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)), VipKind::ClusterIp),
                    (
                        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
                        VipKind::LoadBalancer,
                    ),
                ],
                node_port: Some(30080),
                ext_local: true,
                int_local: false,
                affinity_timeout_s: None,
                backends: vec![
                    backend([10, 244, 1, 5], 8080, true, true),
                    backend([10, 244, 2, 9], 8080, false, false),
                ],
            },
            ServiceSpec {
                name: "kube-system/dns:dns/udp".into(),
                proto: proto::UDP,
                port: 53,
                vips: vec![(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 53)), VipKind::ClusterIp)],
                node_port: None,
                ext_local: false,
                int_local: false,
                affinity_timeout_s: Some(10800),
                backends: vec![],
            },
        ],
        remotes: vec![RemoteSection {
            name: "node-b".into(),
            ipv4: Some(Ipv4Addr::new(192, 168, 0, 12)),
            ipv6: None,
            pod_cidrs: vec![Prefix {
                addr: IpAddr::V4(Ipv4Addr::new(10, 244, 2, 0)),
                len: 24,
            }],
            vtep_mac: [0x02, 0, 0, 0, 0xb, 0xb],
            underlay_mac: MacSpec::Auto,
        }],
        pods: vec![
            PodSection {
                name: "default/web-1".into(),
                interface: "veth-web1".into(),
                mac: [0x02, 0, 0, 0, 1, 5],
                ipv4: Some(Ipv4Addr::new(10, 244, 1, 5)),
                ipv6: None,
                worker: Some(1),
            },
            PodSection {
                name: "default/client".into(),
                interface: "veth-client".into(),
                mac: [0x02, 0, 0, 0, 1, 2],
                ipv4: Some(Ipv4Addr::new(10, 244, 1, 2)),
                ipv6: None,
                worker: None,
            },
        ],
    }
}

pub const CLIENT: [u8; 4] = [10, 244, 1, 2];
pub const VIP: [u8; 4] = [10, 96, 0, 10];
pub const BACKEND: [u8; 4] = [10, 244, 1, 5];

/// A file with everything published, counted and tracked.
pub fn populated(path: &Path) -> Shm {
    let shm = Shm::create_or_open(path, &layout()).unwrap();
    let now = monotonic_ns();
    shm.register(Role::Control, now);
    shm.register(Role::Dataplane, now);
    Publisher::new(&shm).publish(&snapshot(), now).unwrap();
    // Port names as the dataplane writes them: the uplink and the client pod.
    let names = shm.port_names_writer();
    names.set(0, "eth0", &PortKind::Uplink);
    names.set(1, "veth-client", &PortKind::Pod("default/client".into()));
    for w in 0..2u64 {
        let s = shm.stats_writer(w as usize).unwrap();
        let mut c = Counters {
            rx: 100 + w,
            tx: 90,
            dropped: 10 + w,
            ct_new: 5,
            ..Counters::default()
        };
        c.drops[DropReason::NoBackend.index()] = 7;
        c.drops[DropReason::Spoofed.index()] = 3 + w;
        s.store_counters(&c, now);
        s.store_port(
            1,
            &PortCounters {
                rx_packets: 60,
                rx_bytes: 6000,
                tx_packets: 0,
                tx_bytes: 0,
                // The pod's spoofed frames came in on port 1.
                drops: {
                    let mut d = [0; DropReason::COUNT];
                    d[DropReason::Spoofed.index()] = 3 + w;
                    d
                },
            },
        );
        s.store_port(
            0,
            &PortCounters {
                rx_packets: 40 + w,
                rx_bytes: 4000,
                tx_packets: 90,
                tx_bytes: 9000,
                ..PortCounters::default()
            },
        );
        shm.worker_slot(w as usize).unwrap().announce(1, now);
    }
    // Per-Service counters as the dataplane leaves them: ids by name (web 0,
    // dns 1); web: one connection, two packets toward it (74 + 66 bytes)
    // on worker 0, one 1500-byte reply on worker 1; dns: two rejects.
    shm.back_service_counters(2).unwrap();
    let ids = shm
        .service_directory()
        .update(["default/web:http", "kube-system/dns:dns/udp"]);
    assert_eq!(ids, vec![0, 1]);
    let (w0, w1) = (
        shm.service_counters(0).unwrap(),
        shm.service_counters(1).unwrap(),
    );
    w0.connection(0, 74);
    w0.packet(0, false, 66);
    w1.packet(0, true, 1500);
    w0.reject(1);
    w1.reject(1);
    let (ct, _) = shm.conntrack(Timeouts::default()).unwrap();
    let orig = FlowKey::v4(CLIENT, VIP, 40000, 80, proto::TCP);
    let reply = FlowKey::v4(BACKEND, CLIENT, 8080, 40000, proto::TCP);
    ct.insert(&orig, &reply, 0, 0x02, now).unwrap();
    let orig = FlowKey::v4(CLIENT, [10, 96, 0, 53], 5353, 53, proto::UDP);
    ct.insert(&orig, &orig.swap(), 0, 0, now).unwrap();
    shm
}

/// An Ethernet + IPv4 + TCP frame (checksums zero: nothing here verifies
/// them), built byte by byte.
pub fn tcp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = proto::TCP;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let tcp = &mut f[34..54];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    f
}

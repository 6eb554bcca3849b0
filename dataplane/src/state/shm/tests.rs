use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering::*};

use super::*;
use crate::conntrack::{FlowKey, Opened, Timeouts};
use crate::proto;
use crate::state::snapshot::Snapshot;

static N: AtomicU32 = AtomicU32::new(0);

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "twill-shm-unit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
    fn file(&self) -> PathBuf {
        self.0.join("sub").join("node.shm")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn small() -> Layout {
    Layout {
        workers: 2,
        ports: 4,
        conntrack_capacity: 1024,
        slot_bytes: 1 << 16,
        slots: 2,
        trace_records: 8,
        services: 16,
    }
}

fn key(sport: u16) -> FlowKey {
    FlowKey::v4([10, 0, 0, 1], [10, 96, 0, 10], sport, 80, proto::TCP)
}

fn write_word(path: &std::path::Path, off: u64, v: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&v.to_le_bytes(), off).unwrap();
}

#[test]
fn a_new_file_is_0600_in_a_0700_directory_and_sparse() {
    let d = TempDir::new();
    let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
    let meta = std::fs::metadata(d.file()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dmeta = std::fs::metadata(d.file().parent().unwrap()).unwrap();
    assert_eq!(dmeta.permissions().mode() & 0o777, 0o700);
    assert_eq!(meta.len(), shm.geometry().total);
    assert_eq!(shm.live_generation(), 0);
    // Everything before the Service counters is backed; they and the
    // slots are not.
    use std::os::unix::fs::MetadataExt;
    let backed = meta.blocks() * 512;
    assert!(backed >= shm.geometry().svcctr_off, "{backed}");
    assert!(backed < shm.geometry().total, "{backed}");
}

#[test]
fn reopening_with_another_geometry_names_both_layouts() {
    let d = TempDir::new();
    Shm::create_or_open(&d.file(), &small()).unwrap();
    let other = Layout {
        workers: 3,
        ..small()
    };
    let e = Shm::create_or_open(&d.file(), &other).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ShmError::GeometryMismatch { .. }), "{msg}");
    assert!(
        msg.contains("workers: 2") && msg.contains("workers: 3"),
        "{msg}"
    );
    // The same layout reopens.
    Shm::create_or_open(&d.file(), &small()).unwrap();
}

#[test]
fn an_unknown_layout_version_is_refused_naming_both_versions() {
    let d = TempDir::new();
    Shm::create_or_open(&d.file(), &small()).unwrap();
    write_word(&d.file(), 8, 99);
    let e = Shm::open(&d.file()).unwrap_err();
    assert!(
        matches!(
            e,
            ShmError::Version {
                found: 99,
                supported: LAYOUT_VERSION,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("99"));
    let e = Shm::create_or_open(&d.file(), &small()).unwrap_err();
    assert!(matches!(e, ShmError::Version { .. }), "{e}");
}

#[test]
fn a_foreign_file_is_refused_and_left_alone() {
    let d = TempDir::new();
    std::fs::create_dir_all(d.file().parent().unwrap()).unwrap();
    std::fs::write(d.file(), vec![0xabu8; 20000]).unwrap();
    let e = Shm::create_or_open(&d.file(), &small()).unwrap_err();
    assert!(matches!(e, ShmError::BadMagic { .. }), "{e}");
    assert_eq!(std::fs::read(d.file()).unwrap(), vec![0xabu8; 20000]);
}

#[test]
fn truncated_and_empty_files_are_errors() {
    let d = TempDir::new();
    let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
    let total = shm.geometry().total;
    drop(shm);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(d.file())
        .unwrap();
    f.set_len(total - 4096).unwrap();
    let e = Shm::open(&d.file()).unwrap_err();
    assert!(
        matches!(e, ShmError::Truncated { need, .. } if need == total),
        "{e}"
    );
    f.set_len(100).unwrap();
    assert!(matches!(
        Shm::open(&d.file()),
        Err(ShmError::Truncated { .. })
    ));
    f.set_len(0).unwrap();
    assert!(matches!(
        Shm::open(&d.file()),
        Err(ShmError::Truncated { .. })
    ));
    // create_or_open re-creates an empty file.
    Shm::create_or_open(&d.file(), &small()).unwrap();
}

#[test]
fn a_corrupted_geometry_word_is_a_clear_error() {
    let d = TempDir::new();
    Shm::create_or_open(&d.file(), &small()).unwrap();
    // Word 9 of the geometry: conntrack_off.
    write_word(&d.file(), 16 + 9 * 8, 12345);
    let e = Shm::open(&d.file()).unwrap_err();
    assert!(matches!(e, ShmError::Corrupt { .. }), "{e}");
    // A stored layout out of range: workers = 10^6.
    write_word(&d.file(), 16, 1_000_000);
    let e = Shm::open(&d.file()).unwrap_err();
    assert!(e.to_string().contains("workers"), "{e}");
}

#[test]
fn a_missing_file_is_an_io_error_naming_the_path() {
    let d = TempDir::new();
    let e = Shm::open(&d.file()).unwrap_err();
    assert!(e.to_string().contains("node.shm"), "{e}");
}

#[test]
fn a_flow_inserted_through_one_mapping_is_found_through_a_second() {
    let d = TempDir::new();
    let t = Timeouts::default();
    let now = 5_000_000_000u64;
    {
        let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
        let (ct, opened) = shm.conntrack(t).unwrap();
        assert_eq!(opened, Opened::Fresh);
        assert!(ct.is_shared());
        for p in 0..100u16 {
            let k = key(1000 + p);
            ct.insert(&k, &k.swap(), u32::from(p), 0x02, now).unwrap();
        }
        ct.remove(ct.track(&key(1050), 0x10, now).unwrap().id);
        assert_eq!(ct.len(), 99);
    }
    // A restart: a new mapping of the same file.
    let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
    let (ct, opened) = shm.conntrack(t).unwrap();
    assert_eq!(
        opened,
        Opened::Recovered {
            kept: 99,
            dropped: 0
        }
    );
    assert_eq!(ct.len(), 99);
    let hit = ct.track(&key(1007), 0x10, now + 1_000_000).unwrap();
    assert_eq!(hit.user, 7);
    assert!(ct.track(&key(1050), 0x10, now).is_none());
    ct.check_index().unwrap();
    // The free list is whole: the table fills to capacity, no more.
    for p in 0..925u16 {
        let k = FlowKey::v4([10, 1, 0, 1], [10, 2, 0, 1], p, 53, proto::UDP);
        ct.insert(&k, &k.swap(), 0, 0, now).unwrap();
    }
    assert_eq!(ct.len(), 1024);
    assert_eq!(ct.stats().evicted_unassured, 0);
    let k = FlowKey::v4([10, 1, 0, 2], [10, 2, 0, 1], 1, 53, proto::UDP);
    ct.insert(&k, &k.swap(), 0, 0, now).unwrap();
    assert_eq!(ct.len(), 1024);
    assert_eq!(ct.stats().evicted_unassured, 1);
    ct.check_index().unwrap();
}

#[test]
fn a_reader_views_the_dataplanes_flows_without_writing() {
    let d = TempDir::new();
    let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
    assert!(matches!(
        shm.conntrack_view(),
        Err(ShmError::Conntrack { .. })
    ));
    let (ct, _) = shm.conntrack(Timeouts::default()).unwrap();
    let k = key(4000);
    ct.insert(&k, &k.swap(), 9, 0x02, 1 << 30).unwrap();
    let view = Shm::open(&d.file()).unwrap().conntrack_view().unwrap();
    let flows: Vec<_> = view.iter_live(1 << 30).collect();
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].orig, k);
    assert_eq!(flows[0].user, 9);
}

#[test]
fn a_half_written_entry_is_dropped_on_recovery() {
    let d = TempDir::new();
    let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
    let (ct, _) = shm.conntrack(Timeouts::default()).unwrap();
    for p in 0..3u16 {
        let k = key(p);
        ct.insert(&k, &k.swap(), 0, 0x02, 1 << 30).unwrap();
    }
    let id = ct.track(&key(1), 0, 1 << 30).unwrap().id;
    drop(ct);
    // Entry `id`'s version word (its first 4 bytes) made odd: a writer died
    // mid-update.
    let layout = crate::conntrack::Table::shared_layout(1024);
    let off = shm.geometry().conntrack_off as usize
        + layout.entries_off
        + id as usize * crate::conntrack::ENTRY_BYTES;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(d.file())
            .unwrap();
        let mut b = [0u8; 4];
        f.read_exact_at(&mut b, off as u64).unwrap();
        let seq = u32::from_le_bytes(b) | 1;
        f.write_all_at(&seq.to_le_bytes(), off as u64).unwrap();
    }
    let (ct, opened) = shm.conntrack(Timeouts::default()).unwrap();
    assert_eq!(
        opened,
        Opened::Recovered {
            kept: 2,
            dropped: 1
        }
    );
    assert!(ct.track(&key(1), 0, 1 << 30).is_none());
    assert!(ct.track(&key(2), 0, 1 << 30).is_some());
    ct.check_index().unwrap();
}

fn snap(rev: u64) -> Snapshot {
    Snapshot {
        revision: rev,
        built_ns: 1,
        services: vec![crate::lb::ServiceSpec {
            name: format!("default/web:{rev}"),
            proto: proto::TCP,
            port: 80,
            vips: vec![(
                "10.96.0.10".parse::<IpAddr>().unwrap(),
                crate::lb::VipKind::ClusterIp,
            )],
            node_port: None,
            ext_local: false,
            int_local: false,
            affinity_timeout_s: None,
            backends: vec![],
        }],
        remotes: vec![],
        pods: vec![],
    }
}

#[test]
fn the_publisher_alternates_slots_and_skips_the_live_one() {
    let d = TempDir::new();
    let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
    let mut p = Publisher::new(&shm);
    let a = p.publish(&snap(1), 10).unwrap();
    let b = p.publish(&snap(2), 20).unwrap();
    let c = p.publish(&snap(3), 30).unwrap();
    assert_eq!((a.generation, b.generation, c.generation), (1, 2, 3));
    assert_ne!(a.slot, b.slot);
    assert_ne!(b.slot, c.slot);
    let live: Vec<_> = shm.slots().into_iter().filter(|s| s.live).collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].generation, 3);
    // A new publisher (a restarted control) continues the numbering.
    let d2 = Publisher::new(&shm).publish(&snap(4), 40).unwrap();
    assert_eq!(d2.generation, 4);
}

#[test]
fn a_snapshot_larger_than_a_slot_is_refused() {
    let d = TempDir::new();
    let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
    let mut p = Publisher::new(&shm);
    let e = p.publish_bytes(&vec![0u8; (1 << 16) + 1], 0).unwrap_err();
    assert!(matches!(e, PublishError::TooLarge { .. }), "{e}");
    assert_eq!(shm.live_generation(), 0);
}

#[test]
fn the_checksum_sees_a_flipped_bit_anywhere() {
    let mut v: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    let c = checksum(&v);
    for i in [0, 31, 32, 500, 998, 999] {
        v[i] ^= 1;
        assert_ne!(checksum(&v), c, "byte {i}");
        v[i] ^= 1;
    }
    assert_ne!(checksum(&v[..999]), c);
}

#[test]
fn stats_written_by_a_worker_are_read_through_another_handle() {
    let d = TempDir::new();
    let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
    let w = shm.stats_writer(1).unwrap();
    let c = crate::pipeline::Counters {
        rx: 10,
        tx: 7,
        dropped: 3,
        ..Default::default()
    };
    let mut c2 = c;
    c2.drops[crate::pipeline::DropReason::Spoofed.index()] = 3;
    w.store_counters(&c2, 99);
    w.store_port(
        2,
        &PortCounters {
            rx_packets: 5,
            rx_bytes: 500,
            tx_packets: 1,
            tx_bytes: 60,
            drops: std::array::from_fn(|r| r as u64),
        },
    );
    w.add_port(
        2,
        &PortCounters {
            rx_packets: 1,
            ..Default::default()
        },
    );
    // Past the file's ports: ignored, not a panic.
    w.store_port(4, &PortCounters::default());
    let other = Shm::open(&d.file()).unwrap();
    let s = other.worker_stats(1).unwrap();
    assert_eq!(s.counters, c2);
    assert_eq!(s.updated_ns, 99);
    assert_eq!(s.pid, std::process::id());
    assert_eq!(s.ports.len(), 4);
    assert_eq!(s.ports[2].rx_packets, 6);
    assert_eq!(s.ports[2].tx_bytes, 60);
    let spoofed = crate::pipeline::DropReason::Spoofed.index();
    assert_eq!(s.ports[2].drops[spoofed], spoofed as u64);
    assert_eq!(s.ports[1].dropped(), 0);
    assert_eq!(other.worker_stats(0).unwrap().counters, Default::default());
    assert!(other.worker_stats(2).is_none());
    assert!(matches!(
        other.stats_writer(2),
        Err(ShmError::Worker {
            index: 2,
            workers: 2
        })
    ));
}

#[test]
fn a_trace_records_only_the_armed_number_of_matching_frames() {
    let d = TempDir::new();
    let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
    let t = shm.trace();
    assert_eq!(t.remaining(), 0);
    let web: IpAddr = "10.96.0.10".parse().unwrap();
    let f = TraceFilter {
        proto: Some(proto::TCP),
        addr: Some(web),
        ..Default::default()
    };
    Shm::open(&d.file()).unwrap().trace().arm(&f, 3, 1);
    assert_eq!(t.remaining(), 3);
    let got = t.filter();
    assert_eq!(got, f);
    let client: IpAddr = "10.0.0.1".parse().unwrap();
    assert!(got.matches(1, proto::TCP, client, web, 999, 80));
    assert!(!got.matches(1, proto::UDP, client, web, 999, 80));
    assert!(!got.matches(1, proto::TCP, client, client, 999, 80));
    let rec = |i: u16| TraceRecord {
        seq: 0,
        time_ns: u64::from(i),
        worker: 1,
        in_port: 2,
        verdict: if i == 1 {
            TraceVerdict::Drop(crate::pipeline::DropReason::NoBackend.index() as u16)
        } else {
            TraceVerdict::from(crate::pipeline::Verdict::Tx(3))
        },
        proto: proto::TCP,
        family: 4,
        src: client,
        dst: web,
        sport: 1000 + i,
        dport: 80,
    };
    let recorded: Vec<bool> = (0..5).map(|i| t.record(&rec(i))).collect();
    assert_eq!(recorded, [true, true, true, false, false]);
    let (rs, next) = Shm::open(&d.file()).unwrap().trace().read_since(0);
    assert_eq!(next, 3);
    assert_eq!(rs.len(), 3);
    for (i, r) in rs.iter().enumerate() {
        let mut want = rec(i as u16);
        want.seq = i as u64;
        assert_eq!(*r, want);
    }
    assert_eq!(
        rs[1].verdict.drop_reason(),
        Some(crate::pipeline::DropReason::NoBackend)
    );
    // The ring keeps the last `trace_records`.
    t.arm(&TraceFilter::default(), 20, 2);
    for i in 0..20 {
        assert!(t.record(&rec(i)));
    }
    let (rs, next) = t.read_since(0);
    assert_eq!(next, 23);
    assert_eq!(rs.len(), 8);
    assert_eq!(rs[0].seq, 15);
}

#[test]
fn two_handles_see_each_others_announcements_and_processes() {
    let d = TempDir::new();
    let a = Shm::create_or_open(&d.file(), &small()).unwrap();
    let b = Shm::open(&d.file()).unwrap();
    a.worker_slot(0).unwrap().announce(7, 100);
    b.worker_slot(1).unwrap().announce(8, 200);
    let seen = b.announcements();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[0].index, seen[0].generation, seen[0].heartbeat_ns),
        (0, 7, 100)
    );
    assert_eq!((seen[1].index, seen[1].generation), (1, 8));
    assert_eq!(a.announcements(), seen);
    assert!(a.worker_slot(2).is_err());
    a.register(Role::Control, 5);
    b.heartbeat(Role::Control, 6);
    let p = b.process(Role::Control);
    assert_eq!(
        (p.pid, p.started_ns, p.heartbeat_ns),
        (std::process::id(), 5, 6)
    );
    assert_eq!(a.process(Role::Dataplane), ProcInfo::default());
    a.clear_announcements();
    assert!(b.announcements().is_empty());
}

#[test]
fn the_monotonic_clock_moves_forward() {
    let a = monotonic_ns();
    let b = monotonic_ns();
    assert!(a > 0 && b >= a);
    assert!(pid_alive(std::process::id()));
    assert!(!pid_alive(0));
}

fn scale_services(n: u32, per: u32) -> Vec<crate::lb::ServiceSpec> {
    use std::net::Ipv4Addr;
    (0..n)
        .map(|i| crate::lb::ServiceSpec {
            name: format!("ns-{}/svc-{i}:http", i % 100),
            proto: proto::TCP,
            port: 80,
            vips: vec![(
                IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + i)),
                crate::lb::VipKind::ClusterIp,
            )],
            node_port: Some(30000 + (i % 2768) as u16),
            ext_local: false,
            int_local: false,
            affinity_timeout_s: None,
            backends: (0..per)
                .map(|j| crate::lb::BackendSpec {
                    ip: IpAddr::V4(Ipv4Addr::from(0x0af4_0000 + i * 16 + j)),
                    port: 8080,
                    ready: true,
                    serving: true,
                    terminating: false,
                    local: j == 0,
                })
                .collect(),
        })
        .collect()
}

fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (std::time::Duration, T) {
    let mut best = std::time::Duration::MAX;
    let mut out = None;
    for _ in 0..n {
        let t = std::time::Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        out = Some(v);
    }
    (best, out.unwrap())
}

/// 10,000 Services × 10 backends through the codec and the file, and one
/// EndpointSlice change from publish to a rebuilt Service table. Release
/// figures: `cargo test --release -p dataplane ten_thousand_services_through
/// -- --nocapture`.
#[test]
fn ten_thousand_services_through_shared_memory_are_fast() {
    use crate::lb::{ServiceTableBuilder, DEFAULT_MAGLEV_MAX_SIZE};
    let d = TempDir::new();
    let layout = Layout {
        slot_bytes: 32 << 20,
        ..small()
    };
    let shm = Shm::create_or_open(&d.file(), &layout).unwrap();
    let snap = Snapshot {
        revision: 1,
        built_ns: 0,
        services: scale_services(10_000, 10),
        remotes: vec![],
        pods: vec![],
    };
    let mut buf = Vec::new();
    let (enc, _) = best_of(5, || {
        buf.clear();
        snap.encode_into(&mut buf);
    });
    let (dec, _) = best_of(5, || Snapshot::decode(&buf).unwrap());
    let mut p = Publisher::new(&shm);
    let mut r = Reader::new(&shm);
    let (publ, _) = best_of(5, || p.publish(&snap, 0).unwrap());
    let (read, got) = best_of(5, || {
        p.publish(&snap, 0).unwrap();
        let t = std::time::Instant::now();
        let got = r.poll(0).unwrap().unwrap();
        (t.elapsed(), got)
    });
    let read = got.0.min(read);
    assert_eq!(got.1 .1.services, snap.services);
    let build = |specs: Vec<crate::lb::ServiceSpec>, old: Option<&crate::lb::ServiceTable>| {
        let mut b = ServiceTableBuilder::new(DEFAULT_MAGLEV_MAX_SIZE);
        for s in specs {
            b.add(s);
        }
        match old {
            Some(o) => b.build_reusing(o).unwrap(),
            None => b.build().unwrap(),
        }
    };
    let (full, base) = best_of(1, || build(snap.services.clone(), None));
    let mut changed = snap.clone();
    changed.services[4321].backends.remove(2);
    // One change, end to end: publish, read (copy, checksum, decode), build
    // reusing the live table.
    let (change, t) = best_of(5, || {
        p.publish(&changed, 0).unwrap();
        let (_, s) = r.poll(0).unwrap().unwrap();
        build(s.services, Some(&base))
    });
    assert_eq!(t.backend_count(), 99_999);
    println!(
        "10000 services x 10 ({} bytes): encode {enc:?}, decode {dec:?}, publish {publ:?}, \
         read {read:?}; tables: full build {full:?}; one change publish+read+build_reusing \
         {change:?} (best of 5)",
        buf.len()
    );
    let limit = if cfg!(debug_assertions) { 20.0 } else { 0.5 };
    assert!(change.as_secs_f64() < limit, "{change:?}");
}

/// The per-packet lookup over the mapped table against the same lookup
/// over a heap table (`--nocapture` prints both): the storage is the same
/// pointer and length either way.
#[test]
#[cfg_attr(debug_assertions, ignore = "run with --release")]
fn tracking_through_the_shared_table_costs_what_the_owned_one_does() {
    const FLOWS: u16 = 1024;
    const ROUNDS: u64 = 2000;
    let d = TempDir::new();
    let layout = Layout {
        conntrack_capacity: 64 * 1024,
        ..small()
    };
    let shm = Shm::create_or_open(&d.file(), &layout).unwrap();
    let (shared, _) = shm.conntrack(Timeouts::default()).unwrap();
    let owned = crate::conntrack::Table::new(64 * 1024, Timeouts::default());
    let keys: Vec<FlowKey> = (0..FLOWS).map(key).collect();
    let run = |t: &crate::conntrack::Table| {
        for k in &keys {
            t.insert(k, &k.swap(), 1, 0x02, 0).unwrap();
            t.track(&k.swap(), 0x12, 0).unwrap();
            t.track(k, 0x10, 0).unwrap();
        }
        let start = std::time::Instant::now();
        let mut sum = 0u64;
        for r in 0..ROUNDS {
            for k in &keys {
                let h = t
                    .track(std::hint::black_box(k), 0x10, r * 1_000_000)
                    .unwrap();
                sum = sum.wrapping_add(u64::from(h.user));
            }
        }
        assert_eq!(sum, ROUNDS * u64::from(FLOWS));
        start.elapsed().as_nanos() as f64 / (ROUNDS * u64::from(FLOWS)) as f64
    };
    let (o1, s1) = (run(&owned), run(&shared));
    println!("track, established, in cache: owned table {o1:.1} ns, shared table {s1:.1} ns");
    assert!(s1 < 1000.0 && o1 < 1000.0);
}

/// Two mappings of one file used at once, as two processes would: flows
/// inserted through one by one thread are tracked through the other by
/// another thread while they are being inserted.
#[test]
fn two_mappings_share_one_table_concurrently() {
    let d = TempDir::new();
    let a = Shm::create_or_open(&d.file(), &small()).unwrap();
    let b = Shm::open(&d.file()).unwrap();
    let (ta, _) = a.conntrack(Timeouts::default()).unwrap();
    let tb = b.conntrack_view().unwrap();
    let tb = std::sync::Arc::new(tb);
    let reader = {
        let tb = std::sync::Arc::clone(&tb);
        std::thread::spawn(move || {
            let mut found = 0;
            let mut tries = 0;
            while found < 500 && tries < 50_000_000 {
                tries += 1;
                if tb.track(&key(found as u16), 0x10, 1 << 30).is_some() {
                    found += 1;
                }
            }
            found
        })
    };
    for p in 0..500u16 {
        let k = key(p);
        ta.insert(&k, &k.swap(), u32::from(p), 0x02, 1 << 30)
            .unwrap();
    }
    assert_eq!(reader.join().unwrap(), 500);
    assert_eq!(tb.len(), 500);
}

#[test]
fn a_second_live_dataplane_cannot_take_over_the_conntrack_table() {
    let d = TempDir::new();
    let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
    // pid 1 exists in every pid namespace; its heartbeat is fresh.
    let slot = &shm.header().dataplane;
    slot.pid.store(1, Relaxed);
    slot.heartbeat_ns.store(monotonic_ns(), Relaxed);
    let Err(e) = shm.conntrack(Timeouts::default()) else {
        panic!("a live dataplane's table was taken over");
    };
    assert!(
        matches!(e, ShmError::DataplaneRunning { pid: 1, .. }),
        "{e}"
    );
    // A stale heartbeat is a dead dataplane's.
    slot.heartbeat_ns.store(1, Relaxed);
    shm.conntrack(Timeouts::default()).unwrap();
    // Our own registration never blocks us.
    shm.register(Role::Dataplane, monotonic_ns());
    shm.conntrack(Timeouts::default()).unwrap();
}

#[test]
fn a_corrupted_live_word_or_slot_descriptor_is_a_read_error() {
    let d = TempDir::new();
    let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
    let mut p = Publisher::new(&shm);
    let mut r = Reader::new(&shm);
    let h = shm.header();
    // The live word names slot 9 of 2.
    p.publish(&snap(1), 1).unwrap();
    h.live.0.store(layout::live_word(1, 9), SeqCst);
    let e = r.poll(1).unwrap_err();
    assert_eq!(e, ReadError::BadSlot { slot: 9, slots: 2 });
    // The descriptor holds another generation than the live word says.
    let g = p.publish(&snap(2), 2).unwrap();
    h.slots[g.slot].generation.store(77, SeqCst);
    let e = r.poll(2).unwrap_err();
    assert!(
        matches!(
            e,
            ReadError::SlotGeneration {
                found: 77,
                live: 2,
                ..
            }
        ),
        "{e}"
    );
    // The descriptor's length is beyond the slot.
    let g = p.publish(&snap(3), 3).unwrap();
    h.slots[g.slot].len.store(u64::MAX, SeqCst);
    let e = r.poll(3).unwrap_err();
    assert!(matches!(e, ReadError::BadLength { .. }), "{e}");
    // Each error once; then the next good generation.
    assert_eq!(r.poll(4).unwrap().map(|x| x.0), None);
    let g = p.publish(&snap(4), 4).unwrap();
    assert_eq!(r.poll(5).unwrap().map(|x| x.0), Some(g.generation));
}

#[test]
fn a_file_of_the_previous_layout_version_gets_the_version_error() {
    let d = TempDir::new();
    Shm::create_or_open(&d.file(), &small()).unwrap();
    write_word(&d.file(), 8, LAYOUT_VERSION - 1);
    let e = Shm::open(&d.file()).unwrap_err();
    assert!(
        matches!(
            e,
            ShmError::Version {
                found: 2,
                supported: 3,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn service_ids_are_kept_by_name_and_fresh_ids_come_before_freed_ones() {
    let mut ids = ServiceIds::new(3);
    let up = ids.update(["ns/a:http", "ns/b:http"]);
    assert_eq!(up.ids, vec![0, 1]);
    assert_eq!(
        up.assigned,
        vec![
            (0, "ns/a:http".into(), false),
            (1, "ns/b:http".into(), false)
        ]
    );
    // a goes, c comes: c gets the never-used 2, not a's freed 0.
    let up = ids.update(["ns/b:http", "ns/c:http"]);
    assert_eq!(up.ids, vec![1, 2]);
    assert_eq!(up.freed, vec![0]);
    // Only freed ids are left: the one freed longest ago is reused.
    let up = ids.update(["ns/b:http", "ns/c:http", "ns/d:http"]);
    assert_eq!(up.ids, vec![1, 2, 0]);
    assert_eq!(up.assigned, vec![(0, "ns/d:http".into(), true)]);
    assert_eq!(ids.id("ns/a:http"), None);
}

#[test]
fn the_id_freed_longest_ago_is_reused_first() {
    let mut ids = ServiceIds::new(3);
    ids.update(["a", "b", "c"]);
    ids.update(["b", "c"]); // 0 freed
    ids.update(["c"]); // 1 freed
    let up = ids.update(["c", "x", "y"]);
    assert_eq!(up.ids, vec![2, 0, 1]);
}

#[test]
fn services_beyond_the_capacity_get_no_counter_and_are_counted_once() {
    let mut ids = ServiceIds::new(1);
    let up = ids.update(["a", "b", "b"]);
    assert_eq!(up.ids, vec![0, NO_COUNTER, NO_COUNTER]);
    assert_eq!(up.newly_full, 1);
    assert_eq!(ids.unassigned(), 1);
    // The same snapshot again: nothing new to count.
    assert_eq!(ids.update(["a", "b"]).newly_full, 0);
    // a goes: b takes its id.
    let up = ids.update(["b"]);
    assert_eq!(up.ids, vec![0]);
    assert_eq!(ids.unassigned(), 0);
}

#[test]
fn a_name_given_twice_gets_one_id() {
    let mut ids = ServiceIds::new(4);
    assert_eq!(ids.update(["a", "a", "b"]).ids, vec![0, 0, 1]);
}

#[test]
fn service_counters_without_lines_or_past_them_count_nothing() {
    let none = ServiceCounters::none();
    none.packet(0, false, 100);
    none.connection(0, 100);
    none.reject(0);
    assert_eq!(none.get(0), ServiceCounts::default());
    let c = ServiceCounters::owned(2);
    c.packet(u32::MAX, false, 100);
    c.packet(NO_COUNTER, true, 100);
    c.packet(2, true, 100);
    assert_eq!(c.get(0), ServiceCounts::default());
    assert_eq!(c.get(1), ServiceCounts::default());
    c.connection(1, 60);
    c.packet(1, true, 40);
    c.reject(1);
    assert_eq!(
        c.get(1),
        ServiceCounts {
            packets_to: 1,
            bytes_to: 60,
            packets_reply: 1,
            bytes_reply: 40,
            connections: 1,
            rejects: 1,
        }
    );
}

fn stat<'a>(r: &'a ServiceReport, name: &str) -> &'a ServiceStat {
    r.services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} in {r:?}"))
}

#[test]
fn the_directory_names_each_id_and_readers_sum_the_workers_counters() {
    let d = TempDir::new();
    let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
    shm.back_service_counters(2).unwrap();
    let mut dir = shm.service_directory();
    let ids = dir.update(["default/web:http", "kube-system/dns:dns"]);
    assert_eq!(ids, vec![0, 1]);
    let (w0, w1) = (
        shm.service_counters(0).unwrap(),
        shm.service_counters(1).unwrap(),
    );
    w0.connection(0, 74);
    w0.packet(0, true, 60);
    w1.packet(0, false, 66);
    w1.reject(1);
    let r = Shm::open(&d.file()).unwrap().service_report();
    assert_eq!(r.capacity, 16);
    assert_eq!(r.services.len(), 2);
    let web = stat(&r, "default/web:http");
    assert_eq!((web.id, web.epoch), (0, 0));
    assert_eq!(
        web.counts,
        ServiceCounts {
            packets_to: 2,
            bytes_to: 140,
            packets_reply: 1,
            bytes_reply: 60,
            connections: 1,
            rejects: 0,
        }
    );
    assert_eq!(stat(&r, "kube-system/dns:dns").counts.rejects, 1);
}

#[test]
fn a_restarted_dataplane_keeps_the_ids_and_counts_of_the_services_in_the_file() {
    let d = TempDir::new();
    {
        let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
        shm.back_service_counters(2).unwrap();
        let mut dir = shm.service_directory();
        dir.update(["a", "b", "c"]);
        dir.update(["a", "c"]); // b's id 1 freed
        shm.service_counters(1).unwrap().packet(2, false, 10);
    }
    let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
    shm.back_service_counters(1).unwrap();
    let mut dir = shm.service_directory();
    assert_eq!(dir.ids().id("a"), Some(0));
    assert_eq!(dir.ids().id("c"), Some(2));
    assert_eq!(dir.ids().id("b"), None);
    assert_eq!(dir.ids().handed(), 3);
    // A fresh id still comes before the freed one.
    assert_eq!(dir.update(["a", "c", "d"]), vec![0, 2, 3]);
    // Worker 1's counts from the previous run still show (readers sum the
    // most workers any run had).
    let r = shm.service_report();
    assert_eq!(stat(&r, "c").counts.packets_to, 1);
}

#[test]
fn a_reused_id_has_a_new_epoch_and_shows_none_of_its_old_services_counts() {
    let d = TempDir::new();
    let layout = Layout {
        services: 2,
        ..small()
    };
    let shm = Shm::create_or_open(&d.file(), &layout).unwrap();
    shm.back_service_counters(2).unwrap();
    let mut dir = shm.service_directory();
    dir.update(["old", "keep"]);
    let w = shm.service_counters(0).unwrap();
    w.connection(0, 100);
    w.packet(0, true, 50);
    dir.update(["keep"]);
    // An old flow's packet after the Service went: attributed to nobody.
    w.packet(0, false, 100);
    assert_eq!(dir.update(["keep", "new"]), vec![1, 0]);
    let r = shm.service_report();
    let new = stat(&r, "new");
    assert_eq!((new.id, new.epoch), (0, 1));
    assert_eq!(new.counts, ServiceCounts::default());
    w.packet(0, false, 70);
    let r = shm.service_report();
    assert_eq!(
        (
            stat(&r, "new").counts.packets_to,
            stat(&r, "new").counts.bytes_to
        ),
        (1, 70)
    );
    assert!(r.services.iter().all(|s| s.name != "old"));
    // Reopened: the epoch and baseline are read back too.
    let again = Shm::open(&d.file()).unwrap().service_report();
    assert_eq!(stat(&again, "new").epoch, 1);
    assert_eq!(stat(&again, "new").counts.packets_to, 1);
}

#[test]
fn a_long_name_is_cut_at_a_character_boundary_in_the_directory() {
    let d = TempDir::new();
    let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
    let long = format!("ns/{}:p", "é".repeat(100));
    shm.service_directory().update([long.as_str()]);
    let r = shm.service_report();
    assert_eq!(r.services.len(), 1);
    let name = &r.services[0].name;
    assert!(name.len() <= SERVICE_NAME_BYTES, "{}", name.len());
    assert!(long.starts_with(name.as_str()));
}

#[test]
fn a_corrupted_service_directory_is_read_without_panicking() {
    let d = TempDir::new();
    let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
    shm.back_service_counters(2).unwrap();
    shm.service_directory().update(["a", "b"]);
    let g = *shm.geometry();
    let dir = g.svcdir_off;
    // handed, workers: huge; entry 0: name length huge; entry 1: torn.
    write_word(&d.file(), dir + 8, u64::MAX);
    write_word(&d.file(), dir + 32, u64::MAX);
    write_word(&d.file(), dir + 64 + 24, u64::MAX);
    write_word(&d.file(), dir + 64 + 256, 7);
    let r = Shm::open(&d.file()).unwrap().service_report();
    assert!(r.services.len() <= 1, "{r:?}");
    assert!(r
        .services
        .iter()
        .all(|s| s.name.len() <= SERVICE_NAME_BYTES));
    // The writer's view of the same file also opens.
    let ids = shm.service_directory();
    assert!(ids.ids().handed() <= 16);
}

#[test]
fn the_service_counter_lines_are_sparse_until_the_dataplane_backs_its_workers() {
    let d = TempDir::new();
    let layout = Layout {
        services: 4096,
        ..small()
    };
    let shm = Shm::create_or_open(&d.file(), &layout).unwrap();
    use std::os::unix::fs::MetadataExt;
    let g = *shm.geometry();
    let blocks = || std::fs::metadata(d.file()).unwrap().blocks() * 512;
    let before = blocks();
    assert!(before < g.svcctr_off + g.svcctr_stride, "{before}");
    shm.back_service_counters(1).unwrap();
    assert!(blocks() >= before + g.svcctr_stride, "{}", blocks());
    assert!(
        shm.back_service_counters(3).is_err(),
        "past the file's workers"
    );
}

#[test]
fn port_names_written_by_the_dataplane_are_read_by_another_opener_and_cleared() {
    let d = TempDir::new();
    let shm = Shm::create_or_open(&d.file(), &small()).unwrap();
    let w = shm.port_names_writer();
    w.set(0, "eth0", &PortKind::Uplink);
    w.set(2, "veth-web", &PortKind::Pod("default/web-0".into()));
    w.set(60000, "past-the-ports", &PortKind::Uplink); // ignored, no panic
    let other = Shm::open(&d.file()).unwrap();
    let names = other.port_names();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!((names[0].port, names[0].interface.as_str()), (0, "eth0"));
    assert_eq!(names[1].port, 2);
    assert_eq!(names[1].kind, PortKind::Pod("default/web-0".into()));
    // A detached pod's entry is cleared; a new writer (a restarted
    // dataplane) clears them all.
    w.clear(2);
    assert_eq!(other.port_names().len(), 1);
    let _w2 = shm.port_names_writer();
    assert!(other.port_names().is_empty());
}

//! The shared-memory file as the two processes use it: control publishes
//! snapshots through one handle, the dataplane reads them through another
//! mapping of the same real file, workers announce generations, slots are
//! reused only when no live announcer holds them, and damaged slots or
//! snapshots of another version are reported while the reader keeps going.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dataplane::lb::{BackendSpec, ServiceSpec, VipKind};
use dataplane::state::shm::{
    monotonic_ns, Layout, PublishError, Publisher, ReadError, Reader, Role, Shm,
};
use dataplane::state::snapshot::{DecodeError, Snapshot};

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("twill-shm-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
    fn file(&self) -> PathBuf {
        self.0.join("twill").join("node.shm")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn layout() -> Layout {
    Layout {
        workers: 2,
        ports: 8,
        conntrack_capacity: 4096,
        slot_bytes: 1 << 20,
        slots: 2,
        trace_records: 64,
        services: 64,
    }
}

fn snapshot(revision: u64, services: u32) -> Snapshot {
    Snapshot {
        revision,
        built_ns: revision * 10,
        services: (0..services)
            .map(|i| ServiceSpec {
                name: format!("ns/svc-{i}:http"),
                proto: 6,
                port: 80,
                vips: vec![(
                    IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + i)),
                    VipKind::ClusterIp,
                )],
                node_port: None,
                ext_local: false,
                int_local: false,
                affinity_timeout_s: None,
                backends: (0..3)
                    .map(|j| BackendSpec {
                        ip: IpAddr::V4(Ipv4Addr::from(0x0af4_0000 + i * 16 + j)),
                        port: 8080,
                        ready: true,
                        serving: true,
                        terminating: false,
                        local: j == 0,
                    })
                    .collect(),
            })
            .collect(),
        remotes: vec![],
        pods: vec![],
    }
}

#[test]
fn a_snapshot_published_through_one_handle_is_read_through_another() {
    let d = TempDir::new("roundtrip");
    let control = Shm::create_or_open(&d.file(), &layout()).unwrap();
    let dataplane = Shm::create_or_open(&d.file(), &layout()).unwrap();
    let mut reader = Reader::new(&dataplane);
    assert!(reader.poll(1).unwrap().is_none(), "nothing published yet");

    let mut publisher = Publisher::new(&control);
    let s1 = snapshot(7, 20);
    let p = publisher.publish(&s1, 100).unwrap();
    assert_eq!(p.generation, 1);
    assert_eq!(p.bytes, s1.encode().len());
    let (generation, got) = reader.poll(2).unwrap().expect("a new generation");
    assert_eq!(generation, 1);
    assert_eq!(got.revision, 7);
    assert_eq!(got.services, s1.services);
    assert_eq!(got.encode(), s1.encode());
    assert!(reader.poll(3).unwrap().is_none(), "unchanged");

    let s2 = snapshot(8, 5);
    publisher.publish(&s2, 200).unwrap();
    let (generation, got) = reader.poll(4).unwrap().unwrap();
    assert_eq!((generation, got.revision, got.services.len()), (2, 8, 5));
    assert_eq!(dataplane.live_generation(), 2);
    // A reader opened later (twillctl, or a restarted dataplane) sees the
    // live generation at once.
    let late = Shm::open(&d.file()).unwrap();
    let (generation, got) = Reader::new(&late).poll(5).unwrap().unwrap();
    assert_eq!((generation, got.revision), (2, 8));
}

#[test]
fn a_slot_is_reused_only_when_no_live_worker_announces_its_generation() {
    let d = TempDir::new("epoch");
    let control = Shm::create_or_open(&d.file(), &layout()).unwrap();
    let dataplane = Shm::create_or_open(&d.file(), &layout()).unwrap();
    let worker = dataplane.worker_slot(1).unwrap();
    let mut publisher = Publisher::new(&control).stale_after(1_000);
    let now = 1_000_000u64;

    let g1 = publisher.publish(&snapshot(1, 1), now).unwrap();
    worker.announce(g1.generation, now);
    let g2 = publisher.publish(&snapshot(2, 1), now).unwrap();
    assert_ne!(g1.slot, g2.slot);
    // Slot of g2 is live; the other holds g1, which worker 1 still uses.
    let e = publisher.publish(&snapshot(3, 1), now + 10).unwrap_err();
    assert_eq!(
        e,
        PublishError::NoFreeSlot {
            live: 2,
            held: vec![(1, 1)]
        }
    );
    assert_eq!(control.live_generation(), 2, "the live generation stays");
    // The worker moves on: g1's slot is free.
    worker.announce(g2.generation, now + 20);
    let g3 = publisher.publish(&snapshot(3, 1), now + 30).unwrap();
    assert_eq!((g3.generation, g3.slot), (3, g1.slot));

    // A worker whose heartbeat is stale, with no live dataplane registered,
    // no longer holds its generation.
    worker.announce(g3.generation, now + 40);
    publisher.publish(&snapshot(4, 1), now + 50).unwrap(); // into g2's slot
    let e = publisher.publish(&snapshot(5, 1), now + 60).unwrap_err();
    assert!(matches!(e, PublishError::NoFreeSlot { .. }), "{e}");
    let g5 = publisher
        .publish(&snapshot(5, 1), now + 60 + 5_000)
        .unwrap();
    assert_eq!(g5.generation, 5);

    // ...but while the dataplane process is alive its workers' lines count
    // whatever their heartbeat (a worker blocked in poll() is still alive).
    dataplane.register(Role::Dataplane, now);
    worker.announce(g5.generation, now + 70);
    publisher.publish(&snapshot(6, 1), now + 80).unwrap();
    let e = publisher
        .publish(&snapshot(7, 1), now + 1_000_000_000)
        .unwrap_err();
    assert!(
        matches!(e, PublishError::NoFreeSlot { ref held, .. } if held == &vec![(1, 5)]),
        "{e}"
    );
    // A dataplane that starts clears its previous run's lines.
    dataplane.clear_announcements();
    publisher
        .publish(&snapshot(7, 1), now + 1_000_000_000)
        .unwrap();
}

#[test]
fn two_handles_see_each_others_announcements() {
    let d = TempDir::new("announce");
    let a = Shm::create_or_open(&d.file(), &layout()).unwrap();
    let b = Shm::open(&d.file()).unwrap();
    a.worker_slot(0).unwrap().announce(3, 30);
    b.worker_slot(1).unwrap().announce(4, 40);
    for h in [&a, &b] {
        let seen: Vec<_> = h
            .announcements()
            .iter()
            .map(|x| (x.index, x.generation, x.heartbeat_ns))
            .collect();
        assert_eq!(seen, vec![(0, 3, 30), (1, 4, 40)]);
    }
}

/// Offset of the first slot in the file (the last `slots × slot_stride`
/// bytes), and the slot holding the live generation.
fn live_slot_offset(shm: &Shm) -> u64 {
    let g = shm.geometry();
    let live = shm.slots().into_iter().find(|s| s.live).unwrap();
    g.slots_off + g.slot_stride * live.slot as u64
}

#[test]
fn a_damaged_slot_is_reported_once_and_the_next_generation_is_read() {
    let d = TempDir::new("damaged");
    let control = Shm::create_or_open(&d.file(), &layout()).unwrap();
    let dataplane = Shm::create_or_open(&d.file(), &layout()).unwrap();
    let mut publisher = Publisher::new(&control);
    let mut reader = Reader::new(&dataplane);
    publisher.publish(&snapshot(1, 10), 1).unwrap();
    reader.poll(1).unwrap().unwrap();

    publisher.publish(&snapshot(2, 10), 2).unwrap();
    let off = live_slot_offset(&control) + 100;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(d.file())
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], off).unwrap();
    let e = reader.poll(3).unwrap_err();
    assert!(
        matches!(e, ReadError::Checksum { generation: 2, .. }),
        "{e}"
    );
    assert!(reader.poll(4).unwrap().is_none(), "reported once");
    publisher.publish(&snapshot(3, 10), 5).unwrap();
    let (generation, s) = reader.poll(6).unwrap().unwrap();
    assert_eq!((generation, s.revision), (3, 3));
}

#[test]
fn a_snapshot_of_another_version_is_refused_with_both_versions() {
    let d = TempDir::new("version");
    let shm = Shm::create_or_open(&d.file(), &layout()).unwrap();
    let mut publisher = Publisher::new(&shm);
    let mut reader = Reader::new(&shm);
    let mut bytes = snapshot(1, 2).encode();
    bytes[4..8].copy_from_slice(&9u32.to_le_bytes());
    publisher.publish_bytes(&bytes, 1).unwrap();
    let e = reader.poll(2).unwrap_err();
    assert_eq!(
        e,
        ReadError::Decode {
            generation: 1,
            source: DecodeError::Version {
                found: 9,
                supported: 1
            }
        }
    );
    assert!(e.to_string().contains('9'));
    publisher.publish(&snapshot(2, 2), 3).unwrap();
    assert_eq!(reader.poll(4).unwrap().unwrap().1.revision, 2);
}

#[test]
fn a_corrupted_header_is_an_error_not_a_crash() {
    let d = TempDir::new("header");
    Shm::create_or_open(&d.file(), &layout()).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(d.file())
        .unwrap();
    f.write_all_at(b"NOTTWILL", 0).unwrap();
    let e = Shm::open(&d.file()).unwrap_err();
    assert!(
        e.to_string().contains("not a twill shared-memory file"),
        "{e}"
    );
    let e = Shm::create_or_open(&d.file(), &layout()).unwrap_err();
    assert!(e.to_string().contains("bad magic"), "{e}");
}

/// A publisher and a reader racing on two slots: every snapshot the reader
/// gets is whole (its checksum and content match what was published for
/// that generation); a publish that finds no free slot is retried.
#[test]
fn a_reader_racing_a_publisher_never_sees_a_torn_snapshot() {
    let d = TempDir::new("race");
    let control = Shm::create_or_open(&d.file(), &layout()).unwrap();
    let dataplane = Shm::create_or_open(&d.file(), &layout()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&done);
    let reader = std::thread::spawn(move || {
        let mut r = Reader::new(&dataplane);
        let mut seen = 0u64;
        let mut last = 0u64;
        while !stop.load(Ordering::Relaxed) || seen == 0 {
            match r.poll(monotonic_ns()) {
                Ok(Some((generation, s))) => {
                    assert!(generation > last);
                    last = generation;
                    // Revision r has r % 50 + 1 services, each named by index.
                    assert_eq!(s.services.len() as u64, s.revision % 50 + 1);
                    assert_eq!(s.built_ns, s.revision * 10);
                    seen += 1;
                }
                Ok(None) => std::hint::spin_loop(),
                Err(ReadError::Busy) => {}
                Err(e) => panic!("reader: {e}"),
            }
        }
        seen
    });
    let mut p = Publisher::new(&control);
    let mut published = 0;
    let mut busy = 0;
    for rev in 1..=400u64 {
        let s = snapshot(rev, (rev % 50 + 1) as u32);
        loop {
            match p.publish(&s, monotonic_ns()) {
                Ok(_) => break,
                Err(PublishError::NoFreeSlot { .. }) => {
                    busy += 1;
                    std::thread::yield_now();
                }
                Err(e) => panic!("publish: {e}"),
            }
        }
        published += 1;
    }
    done.store(true, Ordering::Relaxed);
    let seen = reader.join().unwrap();
    println!("published {published}, read {seen}, publishes retried {busy}");
    assert!(seen >= 1 && seen <= published);
}

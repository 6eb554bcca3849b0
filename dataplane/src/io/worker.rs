//! Pinned poll-mode workers: N threads, each with its own UMEM and sockets
//! ([`Forwarder`]), its own [`Pipeline`] over the shared tables, conntrack
//! and affinity tables, pinned to a configured CPU.
//!
//! - Sockets: the uplink's rx queue `i` is served by worker `i` (each worker
//!   with an uplink queue sends its uplink traffic on its own queue's socket);
//!   pod interfaces are spread over the workers (fewest ports first). The
//!   first socket of a worker's UMEM is the UMEM's own: detaching its port
//!   retires it (kept open, unused, its fill-ring frames with it; see
//!   `Xsk::remove_socket`), so that interface cannot be attached again until
//!   the process restarts, unless it was deleted. Give the uplink as many
//!   queues as workers and every worker's first socket is an uplink queue.
//! - A frame whose `Tx` port another worker serves is copied to that worker
//!   through the bounded lock-free hand-off fabric ([`super::handoff`]): no
//!   lock, no allocation on the packet path.
//! - Idle back-off: after `idle_polls` empty polls a worker blocks in
//!   `poll()` on its sockets and its eventfd (woken by hand-offs and control
//!   messages), unless `busy_poll`.
//! - At run time, [`Workers::attach`] / [`Workers::detach`] /
//!   [`Workers::set_tables`] send a message to the worker concerned, which
//!   applies it between two polls; the other workers never stop. The
//!   steering program is shared behind a mutex taken only by those control
//!   messages, never per packet.
//! - [`Workers::stop`] detaches the steering program from every interface
//!   first (traffic returns to the kernel), then stops and joins the workers
//!   and returns their final reports.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};

use super::forward::{reply_channel, Control, Forwarder, IoStats, RunOptions};
use super::handoff::{Fabric, Handoff, HandoffStats, NO_WORKER};
use super::hooks::ShmHooks;
use super::xdp::{IfaceMode, Steering};
use super::xsk::{BindMode, FrameAccount, Xsk, XskConfig, XskStats};
use super::IoError;
use crate::pipeline::{Counters, Pipeline};
use crate::state::shm::{Shm, ShmError};
use crate::state::Tables;
use crate::PortId;

/// Frames each worker's hand-off inbox holds.
pub const DEFAULT_INBOX: usize = 1024;

/// How long a control request waits for a worker's answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// One worker's counters and frame account, as of a report.
#[derive(Clone, Debug)]
pub struct WorkerReport {
    pub worker: usize,
    pub cpu: Option<usize>,
    /// Ports served, in socket order.
    pub ports: Vec<PortId>,
    pub io: IoStats,
    pub xsk: XskStats,
    pub handoff: HandoffStats,
    pub account: FrameAccount,
    pub counters: Counters,
}

enum Msg {
    Control(Control),
    Report(Sender<WorkerReport>),
}

/// The CPUs this process may run on (its affinity mask).
pub fn available_cpus() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Workers being set up: sockets are opened and attached here, on the
/// calling thread (in its network namespace), before any thread starts.
pub struct WorkersBuilder {
    steering: Steering,
    fabric: Arc<Fabric>,
    fwds: Vec<Forwarder>,
    cpus: Vec<Option<usize>>,
    /// Per worker: ports attached.
    load: Vec<usize>,
}

impl WorkersBuilder {
    /// One worker per entry of `cpus` (`None`: not pinned), each with its own
    /// UMEM (`xsk`) and the pipeline `pipeline(i)` makes for worker `i`.
    /// Fails naming a CPU that this process cannot run on.
    pub fn new(
        steering: Steering,
        cpus: &[Option<usize>],
        xsk: XskConfig,
        mut pipeline: impl FnMut(usize) -> Pipeline,
    ) -> Result<WorkersBuilder, IoError> {
        if cpus.is_empty() {
            return Err(IoError::setup("at least one worker is needed"));
        }
        let avail = available_cpus();
        for &c in cpus.iter().flatten() {
            if !avail.contains(&c) {
                return Err(IoError::setup(format!(
                    "CPU {c} does not exist or is not allowed for this process (allowed: {})",
                    cpu_list(&avail)
                )));
            }
        }
        let fabric = Fabric::new(cpus.len(), DEFAULT_INBOX)?;
        let mut fwds = Vec::with_capacity(cpus.len());
        for i in 0..cpus.len() {
            let mut f = Forwarder::new(Xsk::new(xsk)?, pipeline(i));
            f.set_handoff(Handoff::new(fabric.clone(), i));
            fwds.push(f);
        }
        Ok(WorkersBuilder {
            steering,
            fabric,
            load: vec![0; cpus.len()],
            fwds,
            cpus: cpus.to_vec(),
        })
    }

    pub fn steering_mut(&mut self) -> &mut Steering {
        &mut self.steering
    }

    /// Connects worker `i` to the shared-memory file's announce line `i`,
    /// stats block `i` and the trace ([`ShmHooks`]). Fails if the file has
    /// room for fewer workers.
    pub fn set_shm(&mut self, shm: &Shm) -> Result<(), ShmError> {
        for (i, f) in self.fwds.iter_mut().enumerate() {
            f.set_shm_hooks(ShmHooks::new(shm, i)?);
        }
        Ok(())
    }

    pub fn workers(&self) -> usize {
        self.fwds.len()
    }

    /// Attaches the uplink `ifname` as `port` with one socket per rx queue
    /// `0..queues`, queue `i` on worker `i` (`queues` is at most the number
    /// of workers). Returns each socket's bind mode.
    pub fn attach_uplink(
        &mut self,
        ifname: &str,
        port: PortId,
        queues: u32,
    ) -> Result<Vec<BindMode>, IoError> {
        let queues = queues.clamp(1, self.fwds.len() as u32);
        let mut modes = Vec::new();
        let mut fds = Vec::new();
        for q in 0..queues {
            let f = &mut self.fwds[q as usize];
            modes.push(f.xsk_mut().add_socket(ifname, q, port)?);
            let (fd, _, _) = f
                .xsk()
                .fd(port)
                .ok_or_else(|| IoError::setup("uplink socket vanished"))?;
            fds.push(fd);
            self.load[q as usize] += 1;
        }
        self.steering
            .attach(ifname, IfaceMode::Uplink, queues, &fds)?;
        self.fabric.set_owner(port, 0);
        Ok(modes)
    }

    /// Attaches `ifname` as `port` on worker `worker` (or the least loaded
    /// one); returns the worker and the socket's bind mode.
    pub fn attach(
        &mut self,
        worker: Option<usize>,
        ifname: &str,
        port: PortId,
        mode: IfaceMode,
    ) -> Result<(usize, BindMode), IoError> {
        let w = match worker {
            Some(w) if w < self.fwds.len() => w,
            Some(w) => {
                return Err(IoError::setup(format!(
                    "{ifname}: worker {w} does not exist ({} workers)",
                    self.fwds.len()
                )))
            }
            None => least_loaded(&self.load),
        };
        let b = self.fwds[w].attach(&mut self.steering, ifname, port, mode)?;
        self.fabric.set_owner(port, w as u16);
        self.load[w] += 1;
        Ok((w, b))
    }

    /// Starts one thread per worker (pinned where a CPU was given) and
    /// returns once all of them run. `stop` ends them (also set by
    /// [`Workers::stop`]); a worker that cannot be pinned fails the start.
    pub fn start(self, opts: RunOptions, stop: Arc<AtomicBool>) -> Result<Workers, IoError> {
        let steering = Arc::new(Mutex::new(self.steering));
        let mut threads = Vec::new();
        let mut ctl = Vec::new();
        let (ready_tx, ready_rx) = crossbeam::channel::unbounded::<Result<(), IoError>>();
        for (i, (fwd, cpu)) in self.fwds.into_iter().zip(self.cpus).enumerate() {
            let (tx, rx) = crossbeam::channel::unbounded();
            ctl.push(tx);
            let ctx = Ctx {
                me: i,
                cpu,
                rx,
                steering: steering.clone(),
                fabric: self.fabric.clone(),
                stop: stop.clone(),
                opts,
            };
            let ready = ready_tx.clone();
            let h = std::thread::Builder::new()
                .name(format!("twill-worker-{i}"))
                .spawn(move || run_worker(fwd, ctx, ready))
                .map_err(|e| IoError::Os {
                    what: format!("starting worker {i}"),
                    source: e,
                })?;
            threads.push(h);
        }
        drop(ready_tx);
        let mut workers = Workers {
            threads,
            ctl,
            fabric: self.fabric,
            steering,
            stop,
            load: self.load,
        };
        for _ in 0..workers.threads.len() {
            match ready_rx.recv_timeout(CONTROL_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    workers.stop();
                    return Err(e);
                }
                Err(_) => {
                    workers.stop();
                    return Err(IoError::setup("a worker did not start"));
                }
            }
        }
        Ok(workers)
    }
}

fn least_loaded(load: &[usize]) -> usize {
    load.iter()
        .enumerate()
        .min_by_key(|(_, n)| **n)
        .map(|(i, _)| i)
        .unwrap_or(0)
}

fn cpu_list(c: &[usize]) -> String {
    c.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Running workers (see the module doc).
pub struct Workers {
    threads: Vec<JoinHandle<WorkerReport>>,
    ctl: Vec<Sender<Msg>>,
    fabric: Arc<Fabric>,
    steering: Arc<Mutex<Steering>>,
    stop: Arc<AtomicBool>,
    load: Vec<usize>,
}

impl Workers {
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    pub fn fabric(&self) -> &Arc<Fabric> {
        &self.fabric
    }

    /// Runs `f` on the steering program (maps: node addresses, VIPs).
    pub fn with_steering<T>(&self, f: impl FnOnce(&mut Steering) -> T) -> T {
        let mut st = self.steering.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut st)
    }

    fn send(&self, w: usize, m: Msg) -> Result<(), IoError> {
        self.ctl
            .get(w)
            .ok_or_else(|| IoError::setup(format!("worker {w} does not exist")))?
            .send(m)
            .map_err(|_| IoError::setup(format!("worker {w} has stopped")))?;
        self.fabric.wake(w);
        Ok(())
    }

    /// Attaches `ifname` as `port` on `worker` (or the least loaded one)
    /// while all workers run; returns the worker and the bind mode.
    pub fn attach(
        &mut self,
        worker: Option<usize>,
        ifname: &str,
        port: PortId,
        mode: IfaceMode,
    ) -> Result<(usize, BindMode), IoError> {
        let w = worker.unwrap_or_else(|| least_loaded(&self.load));
        let (done, reply) = reply_channel();
        self.send(
            w,
            Msg::Control(Control::Attach {
                ifname: ifname.to_string(),
                port,
                mode,
                done,
            }),
        )?;
        let b = reply
            .recv_timeout(CONTROL_TIMEOUT)
            .map_err(|_| IoError::setup(format!("{ifname}: worker {w} did not answer")))??;
        self.fabric.set_owner(port, w as u16);
        self.load[w] += 1;
        Ok((w, b))
    }

    /// Stops serving `port` (its worker applies it between polls).
    pub fn detach(&mut self, port: PortId) -> Result<(), IoError> {
        let w = self
            .fabric
            .owner(port)
            .ok_or_else(|| IoError::setup(format!("port {port}: not attached")))?
            as usize;
        let (done, reply) = reply_channel();
        self.send(w, Msg::Control(Control::Detach { port, done }))?;
        reply
            .recv_timeout(CONTROL_TIMEOUT)
            .map_err(|_| IoError::setup(format!("port {port}: worker {w} did not answer")))??;
        self.fabric.set_owner(port, NO_WORKER);
        self.load[w] = self.load[w].saturating_sub(1);
        Ok(())
    }

    /// Switches every worker to new tables (each between two polls); each
    /// announces the tables' shared-memory generation once it uses them.
    pub fn set_tables(&self, t: Arc<Tables>) -> Result<(), IoError> {
        for w in 0..self.ctl.len() {
            self.send(w, Msg::Control(Control::Tables(t.clone())))?;
        }
        Ok(())
    }

    /// Every worker's current report (asked between polls).
    pub fn reports(&self) -> Vec<WorkerReport> {
        let mut out = Vec::new();
        for w in 0..self.ctl.len() {
            let (tx, rx) = reply_channel();
            if self.send(w, Msg::Report(tx)).is_ok() {
                if let Ok(r) = rx.recv_timeout(CONTROL_TIMEOUT) {
                    out.push(r);
                }
            }
        }
        out
    }

    /// Detaches the steering program from every interface, stops the
    /// workers and returns their final reports.
    pub fn stop(&mut self) -> Vec<WorkerReport> {
        self.with_steering(|st| {
            let idx: Vec<u32> = st.attached().collect();
            for i in idx {
                if let Err(e) = st.detach(i) {
                    log::error!("{e}");
                }
            }
        });
        self.stop.store(true, Ordering::SeqCst);
        self.fabric.wake_all();
        let mut out = Vec::new();
        for h in self.threads.drain(..) {
            match h.join() {
                Ok(r) => out.push(r),
                Err(_) => log::error!("a worker panicked"),
            }
        }
        out
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

struct Ctx {
    me: usize,
    cpu: Option<usize>,
    rx: Receiver<Msg>,
    steering: Arc<Mutex<Steering>>,
    fabric: Arc<Fabric>,
    stop: Arc<AtomicBool>,
    opts: RunOptions,
}

fn report(fwd: &Forwarder, ctx: &Ctx) -> WorkerReport {
    let xsk = fwd.xsk();
    WorkerReport {
        worker: ctx.me,
        cpu: ctx.cpu,
        ports: (0..xsk.len()).map(|i| xsk.port_of(i)).collect(),
        io: fwd.stats(),
        xsk: xsk.stats(),
        handoff: fwd.handoff().map(|h| h.stats()).unwrap_or_default(),
        account: xsk.account(),
        counters: *fwd.pipeline().counters(),
    }
}

fn apply(fwd: &mut Forwarder, ctx: &Ctx, m: Msg) {
    match m {
        Msg::Control(Control::Attach {
            ifname,
            port,
            mode,
            done,
        }) => {
            let mut st = ctx.steering.lock().unwrap_or_else(|p| p.into_inner());
            let r = fwd.attach(&mut st, &ifname, port, mode);
            if r.is_ok() {
                ctx.fabric.set_owner(port, ctx.me as u16);
            }
            let _ = done.send(r);
        }
        Msg::Control(Control::Detach { port, done }) => {
            let mut st = ctx.steering.lock().unwrap_or_else(|p| p.into_inner());
            let r = fwd.detach(&mut st, port);
            let _ = done.send(r);
        }
        Msg::Control(Control::Tables(t)) => fwd.set_tables(t),
        Msg::Report(tx) => {
            let _ = tx.send(report(fwd, ctx));
        }
    }
}

fn run_worker(mut fwd: Forwarder, ctx: Ctx, ready: Sender<Result<(), IoError>>) -> WorkerReport {
    if let Some(c) = ctx.cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
            let _ = ready.send(Err(IoError::setup(format!(
                "worker {}: cannot pin to CPU {c}",
                ctx.me
            ))));
            return report(&fwd, &ctx);
        }
    }
    log::info!(
        "worker {} started on CPU {} with ports {:?}",
        ctx.me,
        ctx.cpu.map_or("any".to_string(), |c| c.to_string()),
        (0..fwd.xsk().len())
            .map(|i| fwd.xsk().port_of(i))
            .collect::<Vec<_>>()
    );
    let _ = ready.send(Ok(()));
    drop(ready);
    let mut empty = 0u32;
    while !ctx.stop.load(Ordering::Relaxed) {
        while let Ok(m) = ctx.rx.try_recv() {
            apply(&mut fwd, &ctx, m);
        }
        if fwd.poll_now() > 0 {
            empty = 0;
            continue;
        }
        empty += 1;
        if !ctx.opts.busy_poll && empty >= ctx.opts.idle_polls {
            fwd.sleep(ctx.opts.sleep_ms);
            empty = 0;
        }
    }
    if let Some(h) = fwd.shm_hooks() {
        h.clear();
    }
    // Let the last transmits complete so the account shows every frame home.
    for _ in 0..10 {
        fwd.xsk_mut().reclaim();
        if fwd.xsk().account().tx == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    report(&fwd, &ctx)
}

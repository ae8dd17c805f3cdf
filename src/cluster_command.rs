//! `phone-ledger cluster`: a whole cluster on one machine for a person to try, run the way a
//! service manager runs one. It starts the NATS servers ([`LocalCluster`]) and one
//! `phone-ledger serve` per node, then watches every process: one that exits while the cluster
//! runs (killed to watch a failover, say) is reported with how it ended and started again, like
//! systemd's `Restart=always`, after a pause that grows while it keeps failing at once
//! ([`Restarts`]). `--no-restart` only reports. Ctrl-C (or SIGTERM) stops them all: the nodes
//! first (each finishes its requests), then the servers (each hands the streams it leads on).

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::cli::ClusterArgs;
use crate::nats_cluster::{cores_per_node, die_with_parent, LocalCluster, NodePorts};
use crate::server;

/// How often the processes are looked at.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// When a process that exited is started again: after `first`, doubled for each exit in a row
/// that came sooner than `settled` after its start (a process that cannot run, its port taken
/// or its directory unreadable, is not started in a tight loop), at most `longest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restarts {
    pub first: Duration,
    pub longest: Duration,
    pub settled: Duration,
}

impl Default for Restarts {
    fn default() -> Self {
        Restarts {
            first: Duration::from_secs(2),
            longest: Duration::from_secs(30),
            settled: Duration::from_secs(10),
        }
    }
}

/// One watched process: when it started, how many times in a row it exited soon after, and when
/// it is to be started again.
#[derive(Debug, Clone)]
pub struct Watched {
    pub label: String,
    started: Instant,
    quick_exits: u32,
    start_at: Option<Instant>,
}

impl Watched {
    /// A process started at `now`.
    pub fn started(label: String, now: Instant) -> Self {
        Watched {
            label,
            started: now,
            quick_exits: 0,
            start_at: None,
        }
    }

    /// It exited at `now`: the pause before it is started again (`None`: not started again).
    pub fn exited(&mut self, now: Instant, policy: Option<Restarts>) -> Option<Duration> {
        let policy = policy?;
        if now.saturating_duration_since(self.started) >= policy.settled {
            self.quick_exits = 0;
        }
        let pause = policy.first.saturating_mul(1 << self.quick_exits.min(16)).min(policy.longest);
        self.quick_exits = self.quick_exits.saturating_add(1);
        self.start_at = Some(now + pause);
        Some(pause)
    }

    /// Whether it is time to start it again.
    pub fn due(&self, now: Instant) -> bool {
        self.start_at.is_some_and(|at| now >= at)
    }

    /// It was started again at `now`.
    pub fn restarted(&mut self, now: Instant) {
        self.started = now;
        self.start_at = None;
    }
}

/// How a process ended, as a person reads it.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => {
            let name = match signal {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGQUIT => " (SIGQUIT)",
                _ => "",
            };
            format!("killed by signal {signal}{name}")
        }
        (None, None) => "ended".to_string(),
    }
}

/// Checks one process: reports an exit (`exited`, asked without blocking) and starts it again
/// when its pause is over (`start`, giving its process id).
fn watch(
    w: &mut Watched,
    pid: Option<u32>,
    exited: Option<ExitStatus>,
    policy: Option<Restarts>,
    start: impl FnOnce() -> Result<u32, String>,
) {
    let now = Instant::now();
    if let Some(status) = exited {
        let pid = pid.map_or_else(String::new, |p| format!(" (pid {p})"));
        match w.exited(now, policy) {
            Some(pause) => eprintln!("{}{pid} {}; starting it again in {} s", w.label, describe(status), pause.as_secs()),
            None => eprintln!("{}{pid} {}; not started again (--no-restart)", w.label, describe(status)),
        }
    }
    if w.due(now) {
        w.restarted(now);
        match start() {
            Ok(pid) => eprintln!("{} started again (pid {pid})", w.label),
            Err(e) => {
                eprintln!("{} could not be started again: {e}", w.label);
                w.exited(now, policy);
            }
        }
    }
}

/// One `phone-ledger serve` node of the cluster.
struct NodeProcess {
    config: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    fn start(&mut self, exe: &Path) -> Result<u32, String> {
        let mut command = std::process::Command::new(exe);
        command.args(["serve", "--config"]).arg(&self.config);
        // Started by the main thread, which lives until the nodes are stopped: a supervisor that
        // is killed takes its nodes with it rather than leave them serving.
        // A process group of its own: a Ctrl-C at the terminal signals only the process that
        // started it, which stops it in its turn (nodes before the servers they use).
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        die_with_parent(&mut command);
        let child = command.spawn().map_err(|e| e.to_string())?;
        let pid = child.id();
        self.child = Some(child);
        Ok(pid)
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())?;
        self.child = None;
        Some(status)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Writes node `i`'s configuration under `dir`: what a real deployment of the clustered mode
/// writes (the servers, the peers, a shared pagination secret).
fn write_node_config(args: &ClusterArgs, i: u16, servers: &[String], replicas: u32, cores: usize) -> Result<PathBuf, String> {
    let node_dir = args.dir.join(format!("node-{}", i + 1));
    std::fs::create_dir_all(&node_dir).map_err(|e| format!("{}: {e}", node_dir.display()))?;
    let peers: Vec<String> = (0..args.nodes).map(|j| format!("http://127.0.0.1:{}", args.port + j)).collect();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = {data:?}\nworkers = {cores}\npagination_secret = \"shared by the nodes of this cluster\"\n\
         [store]\nbackend = \"jetstream\"\n[store.jetstream]\nservers = {servers:?}\nreplicas = {replicas}\nthreads = {cores}\n\
         [cluster]\npeers = {peers:?}\nself_url = \"http://127.0.0.1:{port}\"\n",
        port = args.port + i,
        data = node_dir.display().to_string(),
    );
    let path = node_dir.join("node.toml");
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Runs `phone-ledger cluster` until Ctrl-C or SIGTERM.
pub fn run(args: &ClusterArgs) -> Result<(), String> {
    let n = args.nodes.max(1);
    let ports: Vec<NodePorts> = (0..n)
        .map(|i| NodePorts {
            client: args.nats_port + i,
            cluster: args.nats_port + 2000 + i,
            monitor: args.nats_port + 4000 + i,
        })
        .collect();
    let mut nats = LocalCluster::start_on(&args.dir, &ports).map_err(|e| crate::error_chain(&e))?;
    let servers: Vec<String> = nats.client_urls();
    let replicas = if n >= 3 { 3 } else { 1 };
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    // The nodes share this machine: each gets its share of the cores for its HTTP workers and for
    // the runtime that talks to the cluster (both measured in the README).
    let cores = cores_per_node(usize::from(n));
    let mut nodes = Vec::new();
    for i in 0..n {
        let config = write_node_config(args, i, &servers, replicas, cores)?;
        let mut node = NodeProcess { config, child: None };
        node.start(&exe).map_err(|e| format!("cannot start node {}: {e}", i + 1))?;
        nodes.push(node);
    }
    let now = Instant::now();
    let mut nats_watched: Vec<Watched> = (0..usize::from(n))
        .map(|i| Watched::started(format!("NATS server {}", i + 1), now))
        .collect();
    let mut nodes_watched: Vec<Watched> = (0..n)
        .map(|i| Watched::started(format!("phone-ledger node {}", i + 1), now))
        .collect();
    for (i, url) in servers.iter().enumerate() {
        let pid = nats.pid(i).map_or_else(String::new, |p| format!("pid {p}, "));
        eprintln!("NATS server {}: {url} ({pid}log {})", i + 1, nats.log_path(i).display());
    }
    for (i, node) in nodes.iter().enumerate() {
        let pid = node.pid().map_or_else(String::new, |p| format!("pid {p}, "));
        eprintln!(
            "phone-ledger node {}: http://127.0.0.1:{} ({pid}configuration {})",
            i + 1,
            args.port + i as u16,
            node.config.display()
        );
    }
    let policy = (!args.no_restart).then(Restarts::default);
    match policy {
        Some(r) => eprintln!(
            "A process that exits is started again after {} s (longer while it keeps failing). Ctrl-C stops them all.",
            r.first.as_secs()
        ),
        None => eprintln!("A process that exits is reported, not started again (--no-restart). Ctrl-C stops them all."),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let stop = server::wait_for_signal();
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(WATCH_EVERY);
        loop {
            // The stop first: on Ctrl-C the terminal signals every process of the group, and
            // the nodes' exits that follow are not failures to restart.
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = tick.tick() => {}
            }
            for (i, w) in nats_watched.iter_mut().enumerate() {
                let (pid, exited) = (nats.pid(i), nats.exited(i));
                watch(w, pid, exited, policy, || nats.start_again(i).map_err(|e| crate::error_chain(&e)));
            }
            for (node, w) in nodes.iter_mut().zip(nodes_watched.iter_mut()) {
                let (pid, exited) = (node.pid(), node.exited());
                watch(w, pid, exited, policy, || node.start(&exe));
            }
        }
    });
    eprintln!("stopping");
    for child in nodes.iter().filter_map(|n| n.child.as_ref()) {
        // SIGTERM: each node finishes its requests and closes its connection to the log.
        let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    }
    for child in nodes.iter_mut().filter_map(|n| n.child.as_mut()) {
        let _ = child.wait();
    }
    nats.shut_down_all(Duration::from_secs(10));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Restarts = Restarts {
        first: Duration::from_secs(2),
        longest: Duration::from_secs(30),
        settled: Duration::from_secs(10),
    };

    /// Given a process that ran a while, when it exits, then it is started again after the
    /// first pause; each exit in a row soon after a start doubles the pause, up to the longest;
    /// one that ran long enough starts over from the first pause.
    #[test]
    fn a_process_that_keeps_failing_is_started_again_ever_more_slowly() {
        let t0 = Instant::now();
        let mut w = Watched::started("NATS server 2".into(), t0);
        let mut at = t0 + Duration::from_secs(60);
        let mut pauses = Vec::new();
        for _ in 0..6 {
            let pause = w.exited(at, Some(POLICY)).expect("restarted");
            pauses.push(pause.as_secs());
            assert!(!w.due(at + pause - Duration::from_millis(1)), "not before its pause is over");
            assert!(w.due(at + pause));
            at += pause;
            w.restarted(at);
            at += Duration::from_secs(1);
        }
        assert_eq!(pauses, [2, 4, 8, 16, 30, 30]);
        at += Duration::from_secs(10);
        assert_eq!(w.exited(at, Some(POLICY)), Some(Duration::from_secs(2)));
    }

    #[test]
    fn with_no_restart_an_exit_is_only_reported() {
        let t0 = Instant::now();
        let mut w = Watched::started("phone-ledger node 1".into(), t0);
        assert_eq!(w.exited(t0 + Duration::from_secs(60), None), None);
        assert!(!w.due(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn an_exit_is_described_by_its_status_or_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(describe(ExitStatus::from_raw(9)), "killed by signal 9 (SIGKILL)");
        assert_eq!(describe(ExitStatus::from_raw(1 << 8)), "exited with status 1");
        assert_eq!(describe(ExitStatus::from_raw(0)), "exited with status 0");
    }
}

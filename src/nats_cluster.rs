//! A NATS JetStream cluster of real `nats-server` processes on loopback ports, each with a
//! directory of its own: what the tests of the clustered backend run against, and what
//! `phone-ledger cluster` starts for a person to try the clustered mode on one machine.
//!
//! The servers are started from the `nats-server` binary on the `PATH` (Debian's package) with a
//! generated configuration file: JetStream with its store in the node's directory, a cluster
//! block whose routes name every node, and a monitor port whose
//! `/healthz?js-enabled-only=true` says when the node is ready. Each runs on its share of the
//! machine's cores (`GOMAXPROCS`, unless set already), as the phone-ledger nodes beside it do.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a local cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("nats-server is not installed (Debian: apt-get install -y nats-server)")]
    NotInstalled,
    #[error("cannot prepare {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no free loopback port")]
    NoPort(#[source] std::io::Error),
    #[error("nats-server node {node} did not become ready within {secs} s (its log: {log})")]
    NotReady { node: usize, secs: u64, log: PathBuf },
    #[error("nats-server node {node} stopped while starting (its log: {log})")]
    Stopped { node: usize, log: PathBuf },
}

/// The program that runs a node.
pub const NATS_SERVER: &str = "nats-server";

/// The share of this machine's cores each of `nodes` nodes sharing it gets: its cores divided
/// among them, at least one. A phone-ledger node runs that many HTTP workers and threads that
/// talk to NATS, a NATS server that many Go threads at once (more threads than cores only adds
/// hand-offs between them).
pub fn cores_per_node(nodes: usize) -> usize {
    (std::thread::available_parallelism().map_or(1, usize::from) / nodes.max(1)).max(1)
}

/// Whether `nats-server` can be run here.
pub fn nats_server_available() -> bool {
    Command::new(NATS_SERVER)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The ports one node listens on.
#[derive(Debug, Clone, Copy)]
pub struct NodePorts {
    pub client: u16,
    pub cluster: u16,
    pub monitor: u16,
}

struct Node {
    ports: NodePorts,
    dir: PathBuf,
    child: Option<Child>,
}

/// A running local cluster. Dropping it kills its servers (their directories stay, under the
/// base directory the caller owns).
pub struct LocalCluster {
    name: String,
    nodes: Vec<Node>,
}

fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(ClusterError::NoPort)?;
    listener.local_addr().map(|a| a.port()).map_err(ClusterError::NoPort)
}

impl LocalCluster {
    /// Starts `size` nodes on free loopback ports under `base_dir` (one subdirectory each) and
    /// waits until every one has JetStream ready.
    ///
    /// A free port is found by binding it and letting it go, so another process may take it
    /// before the server binds it; a server that stops for that is started again, with the
    /// others, on fresh ports and fresh directories (a few times).
    pub fn start(base_dir: &Path, size: usize) -> Result<Self, ClusterError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let ports = (0..size)
                .map(|_| {
                    Ok(NodePorts {
                        client: free_port()?,
                        cluster: free_port()?,
                        monitor: free_port()?,
                    })
                })
                .collect::<Result<Vec<_>, ClusterError>>()?;
            match Self::start_on(base_dir, &ports) {
                Err(ClusterError::Stopped { node, log }) if attempts < 5 => {
                    eprintln!(
                        "nats-server node {node} stopped while starting (see {}); starting the cluster again on fresh ports",
                        log.display()
                    );
                    for i in 0..size {
                        let _ = std::fs::remove_dir_all(base_dir.join(format!("nats-{}", i + 1)));
                    }
                }
                other => return other,
            }
        }
    }

    /// Starts one node per entry of `ports` under `base_dir`. A cluster started again over the
    /// same directories and ports finds its streams where it left them.
    pub fn start_on(base_dir: &Path, ports: &[NodePorts]) -> Result<Self, ClusterError> {
        if !nats_server_available() {
            return Err(ClusterError::NotInstalled);
        }
        let size = ports.len();
        let mut nodes = Vec::with_capacity(size);
        for (i, ports) in ports.iter().enumerate() {
            let dir = base_dir.join(format!("nats-{}", i + 1));
            std::fs::create_dir_all(&dir).map_err(|source| ClusterError::Io { path: dir.clone(), source })?;
            nodes.push(Node {
                ports: *ports,
                dir,
                child: None,
            });
        }
        let mut cluster = LocalCluster {
            name: "phone-ledger".into(),
            nodes,
        };
        for i in 0..size {
            cluster.write_config(i)?;
            cluster.spawn(i)?;
        }
        for i in 0..size {
            cluster.ready_or_again(i)?;
        }
        Ok(cluster)
    }

    /// Waits until node `i` is ready; if it stopped while starting (its ports, known free a
    /// moment ago, taken meanwhile: a client's ephemeral port, say), starts it again a few times.
    fn ready_or_again(&mut self, i: usize) -> Result<(), ClusterError> {
        let mut attempts = 1;
        loop {
            match self.wait_ready(i, Duration::from_secs(20)) {
                Err(ClusterError::Stopped { .. }) if attempts < 5 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_secs(1));
                    self.kill(i);
                    self.spawn(i)?;
                }
                done => return done,
            }
        }
    }

    fn write_config(&self, i: usize) -> Result<(), ClusterError> {
        let node = &self.nodes[i];
        let routes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("\"nats-route://127.0.0.1:{}\"", n.ports.cluster))
            .collect();
        let mut config = format!(
            "server_name: n{id}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
             jetstream {{ store_dir: {store:?} }}\n",
            id = i + 1,
            client = node.ports.client,
            monitor = node.ports.monitor,
            store = node.dir.join("jetstream").display().to_string(),
        );
        // One server alone is a standalone JetStream server: a cluster of one would wait for
        // peers to elect its meta leader.
        if self.nodes.len() > 1 {
            config.push_str(&format!(
                "cluster {{ name: {name:?}, listen: 127.0.0.1:{cluster}, routes: [{routes}] }}\n",
                name = self.name,
                cluster = node.ports.cluster,
                routes = routes.join(", "),
            ));
        }
        let path = node.dir.join("nats.conf");
        std::fs::write(&path, config).map_err(|source| ClusterError::Io { path, source })
    }

    fn spawn(&mut self, i: usize) -> Result<(), ClusterError> {
        let share = cores_per_node(self.nodes.len());
        let node = &mut self.nodes[i];
        let log_path = node.dir.join("nats.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| ClusterError::Io {
                path: log_path.clone(),
                source,
            })?;
        let err = log.try_clone().map_err(|source| ClusterError::Io {
            path: log_path.clone(),
            source,
        })?;
        let mut command = Command::new(NATS_SERVER);
        // The servers share this machine (with the nodes using them): each runs Go code on its
        // share of the cores, as the nodes do, unless the environment says otherwise. An idle
        // Go thread looks for work for a while before it sleeps; with more of them than cores,
        // that looking takes the CPU from the processes that have work.
        if std::env::var_os("GOMAXPROCS").is_none() {
            command.env("GOMAXPROCS", share.to_string());
        }
        command
            .arg("-c")
            .arg(node.dir.join("nats.conf"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        // A process group of its own: a Ctrl-C at the terminal signals only the process that
        // started it, which stops it in its turn (nodes before the servers they use).
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        die_with_parent(&mut command);
        let child = command.spawn().map_err(|source| ClusterError::Io { path: log_path, source })?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until node `i` answers its JetStream health check.
    pub fn wait_ready(&self, i: usize, within: Duration) -> Result<(), ClusterError> {
        let node = &self.nodes[i];
        let url = format!("http://127.0.0.1:{}/healthz?js-enabled-only=true", node.ports.monitor);
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(1)).build();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if !self.running(i) {
                return Err(ClusterError::Stopped {
                    node: i + 1,
                    log: node.dir.join("nats.log"),
                });
            }
            // Its own answer: the port may be another process's if the server could not bind it.
            let answer = agent.get(&url).call().ok().and_then(|r| r.into_string().ok());
            if answer.is_some_and(|body| body.contains("\"ok\"")) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ClusterError::NotReady {
            node: i + 1,
            secs: within.as_secs(),
            log: node.dir.join("nats.log"),
        })
    }

    /// Whether node `i`'s server process is running (not exited, not waiting to be reaped).
    fn running(&self, i: usize) -> bool {
        self.nodes[i].child.as_ref().is_some_and(|child| {
            std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
                .is_ok_and(|stat| stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"))
        })
    }

    /// The client URLs of every node (`nats://127.0.0.1:port`).
    pub fn client_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.ports.client)).collect()
    }

    /// Each node's ports.
    pub fn ports(&self) -> Vec<NodePorts> {
        self.nodes.iter().map(|n| n.ports).collect()
    }

    /// The server name of node `i` (`n1`, `n2`, ...), as JetStream reports its leaders.
    pub fn server_name(&self, i: usize) -> String {
        format!("n{}", i + 1)
    }

    /// The node leading JetStream stream `stream`: a running node whose own monitor port says it
    /// leads it. (Its followers go on naming a killed leader until they vote for another.)
    pub fn leader_of(&self, stream: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            self.stream_cluster(i, stream)
                .is_some_and(|cluster| cluster["leader"].as_str() == Some(self.server_name(i).as_str()))
        })
    }

    /// How long after `since` a node other than `lost` came to lead `stream` (polled every 20 ms
    /// for up to `within`; `None` if none did): the server's own election or hand-over.
    pub fn new_leader_after(&self, stream: &str, lost: usize, since: Instant, within: Duration) -> Option<Duration> {
        while since.elapsed() < within {
            if self.leader_of(stream).is_some_and(|new| new != lost) {
                return Some(since.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits until `stream` has a leader and every other node is a replica of it that is
    /// caught up (after a restart, say: a server still catching up does not stand for election,
    /// and one that is behind is not handed the leadership).
    pub fn wait_current(&self, stream: &str, within: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < within {
            let caught_up = self
                .leader_of(stream)
                .and_then(|leader| self.stream_cluster(leader, stream))
                .is_some_and(|cluster| {
                    cluster["replicas"].as_array().is_some_and(|replicas| {
                        replicas.len() + 1 == self.nodes.len() && replicas.iter().all(|r| r["current"] == true && r["offline"] != true)
                    })
                });
            if caught_up {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The `cluster` part of `stream`'s details as node `i`'s monitor port reports them.
    fn stream_cluster(&self, i: usize, stream: &str) -> Option<serde_json::Value> {
        self.nodes[i].child.as_ref()?;
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
        let url = format!("http://127.0.0.1:{}/jsz?streams=true", self.nodes[i].ports.monitor);
        let jsz: serde_json::Value = agent.get(&url).call().ok()?.into_json().ok()?;
        jsz["account_details"].as_array()?.iter().find_map(|account| {
            account["stream_detail"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == stream)
                .map(|s| s["cluster"].clone())
        })
    }

    /// The process id of node `i`'s server, while it runs (to freeze it with SIGSTOP, say).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Kills node `i` at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops node `i` the way an operator would for maintenance (SIGTERM): nats-server first
    /// hands each Raft group it leads to a follower that is caught up, then exits. Killed
    /// (SIGKILL) if it has not exited within `within`.
    pub fn shut_down(&mut self, i: usize, within: Duration) {
        let Some(mut child) = self.nodes[i].child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// How node `i`'s server ended, once it has (and only the first time it is asked): a
    /// supervisor's question, answered without blocking.
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let node = &mut self.nodes[i];
        let status = node.child.as_mut().and_then(|child| child.try_wait().ok().flatten())?;
        node.child = None;
        Some(status)
    }

    /// Starts node `i`'s server again over its directory, without waiting for it to be ready;
    /// its process id.
    pub fn start_again(&mut self, i: usize) -> Result<u32, ClusterError> {
        self.kill(i);
        self.spawn(i)?;
        self.pid(i).ok_or(ClusterError::Stopped {
            node: i + 1,
            log: self.log_path(i),
        })
    }

    /// Where node `i`'s server writes its log.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join("nats.log")
    }

    /// Stops every node the way [`shut_down`](Self::shut_down) does, each within `within`.
    pub fn shut_down_all(&mut self, within: Duration) {
        for i in 0..self.nodes.len() {
            self.shut_down(i, within);
        }
    }

    /// Starts node `i` again over its directory and waits until it is ready.
    pub fn restart(&mut self, i: usize) -> Result<(), ClusterError> {
        self.kill(i);
        self.spawn(i)?;
        self.ready_or_again(i)
    }

    /// Waits for every node's children to end after killing them.
    pub fn stop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Asks the kernel to kill the server when the thread that started it ends, so a test process
/// that dies (or a cluster kept in a static, which is never dropped) leaves no servers behind.
/// (The tests' phone-ledger servers too: start them from a thread that lives as long as they
/// should.)
#[cfg(target_os = "linux")]
pub fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child's own attributes.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn die_with_parent(_command: &mut Command) {}

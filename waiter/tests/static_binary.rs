//! The static executable that ships (`make waiter`, handed over in GRACEGATE_WAIT_BIN): at
//! most 5 MB, no dynamic loader, and working in an empty root that holds nothing but it and
//! `/etc/resolv.conf`, the way it lands in a distroless or scratch application image.
//!
//! Both tests are ignored by a plain `cargo test` (which builds no static binary) and
//! reported so; `make test` builds the binary and runs them with `--ignored`.

mod support;

use std::fs;
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::*;

/// The budget for the waiter, which every opted-in pod carries in an emptyDir.
const MAX_BYTES: u64 = 5_000_000;

fn static_bin() -> PathBuf {
    PathBuf::from(std::env::var_os("GRACEGATE_WAIT_BIN").expect(
        "GRACEGATE_WAIT_BIN is not set: `make test` builds the static waiter and sets it \
         (by hand: `make waiter`, then GRACEGATE_WAIT_BIN=$(make -s waiter-path))",
    ))
}

#[test]
#[ignore = "needs the static waiter: `make test` builds it and runs this with GRACEGATE_WAIT_BIN=…"]
fn the_static_waiter_is_small_and_needs_no_loader() {
    let bin = static_bin();
    let size = fs::metadata(&bin).unwrap().len();
    assert!(
        size <= MAX_BYTES,
        "{}: {size} bytes, over the {MAX_BYTES}-byte budget",
        bin.display()
    );
    assert!(
        !has_interpreter(&bin),
        "{} asks for a program interpreter (PT_INTERP): not static",
        bin.display()
    );
    let version = Command::new(&bin)
        .arg("--version")
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("gracegate-wait {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// The waiter in an empty root (chroot, as uid 65532), in a network namespace of its own
/// where this test runs the cluster DNS and gracegate on 127.0.0.1:53 and :443: no loader,
/// no libc files, no NSS, no CA store; DNS through its own client (the search list walk of
/// a pod's resolv.conf, and TCP after a truncated UDP answer), TLS verified against the
/// bundle given, released at once; and a name that does not resolve waits for the deadline.
#[test]
#[ignore = "needs the static waiter and root (network namespace, chroot): `make test` runs this with GRACEGATE_WAIT_BIN=… where `unshare --net true` works"]
fn the_static_waiter_works_in_an_empty_root() {
    let bin = static_bin();
    let chroot = ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("no chroot(1) on this machine (coreutils)");

    let root = Scratch::new("empty-root");
    fs::set_permissions(&root.0, fs::Permissions::from_mode(0o755)).unwrap();
    fs::copy(&bin, root.path("gracegate-wait")).unwrap();
    fs::create_dir(root.path("etc")).unwrap();
    // As the kubelet writes it for a pod in namespace `shop`.
    fs::write(
        root.path("etc/resolv.conf"),
        "search shop.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver 127.0.0.1\n\
         options ndots:5 timeout:1 attempts:2\n",
    )
    .unwrap();
    let mut inside: Vec<_> = walk(&root.0);
    inside.sort();
    assert_eq!(inside, ["etc", "etc/resolv.conf", "gracegate-wait"]);

    enter_new_network_namespace().unwrap_or_else(|e| {
        panic!(
            "cannot make a network namespace ({e}): this test needs root (CAP_SYS_ADMIN, \
             CAP_SYS_CHROOT); `make test` skips it, saying so, where `unshare --net true` fails"
        )
    });
    let dns = NameServer::start(
        UdpSocket::bind("127.0.0.1:53").unwrap(),
        TcpListener::bind("127.0.0.1:53").unwrap(),
        "gracegate.gracegate-system.svc.cluster.local",
        [127, 0, 0, 1],
        true,
    );
    let pki = Pki::new(&["gracegate.gracegate-system.svc"]);
    let gracegate = Server::https_on(&pki, TcpListener::bind("127.0.0.1:443").unwrap(), |_, _| {
        Act::release(POD_UID)
    });

    let in_root = |url: &str, seconds: &str| -> (Output, Duration) {
        let started = Instant::now();
        // Spawned from this thread, so in its network namespace.
        let output = Command::new(chroot)
            .arg("--userspec=65532:65532")
            .arg(&root.0)
            .args([
                "/gracegate-wait",
                "wait",
                "--url",
                url,
                "--max-seconds",
                seconds,
                "--ca",
                &pki.ca_pem,
            ])
            .env_clear()
            .envs(pod_env())
            .output()
            .unwrap();
        (output, started.elapsed())
    };

    let (output, elapsed) = in_root("https://gracegate.gracegate-system.svc", "20");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{output:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}: {stderr}");
    assert!(stderr.contains("released after "), "{stderr}");
    assert_eq!(
        dns.asked(),
        [
            "gracegate.gracegate-system.svc.shop.svc.cluster.local 1 udp",
            "gracegate.gracegate-system.svc.svc.cluster.local 1 udp",
            "gracegate.gracegate-system.svc.cluster.local 1 udp",
            "gracegate.gracegate-system.svc.cluster.local 1 tcp",
            "gracegate.gracegate-system.svc.cluster.local 28 udp",
        ],
        "the search list in order, TCP after the truncated answer, then AAAA"
    );
    let requests = gracegate.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].sni.as_deref(),
        Some("gracegate.gracegate-system.svc")
    );
    assert!(
        requests[0]
            .head
            .contains("\r\nHost: gracegate.gracegate-system.svc\r\n")
    );

    let (output, elapsed) = in_root("https://nowhere.gracegate-system.svc", "2");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{output:?}");
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(4),
        "{elapsed:?}: {stderr}"
    );
    assert!(
        stderr.contains("cannot reach gracegate: DNS: nowhere.gracegate-system.svc not found"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("deadline of 2s reached; stopping\n"),
        "{stderr}"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            found.extend(
                walk(&path)
                    .into_iter()
                    .map(|inner| format!("{name}/{inner}")),
            );
        }
        found.push(name);
    }
    found
}

/// Moves the calling thread (only it: a network namespace belongs to a thread, and the
/// processes it spawns) into a new network namespace, with the loopback interface up.
fn enter_new_network_namespace() -> io::Result<()> {
    unsafe extern "C" {
        fn unshare(flags: i32) -> i32;
        fn ioctl(fd: i32, request: u64, ...) -> i32;
    }
    const CLONE_NEWNET: i32 = 0x4000_0000;
    const SIOCGIFFLAGS: u64 = 0x8913;
    const SIOCSIFFLAGS: u64 = 0x8914;
    const IFF_UP: i16 = 0x1;
    /// `struct ifreq` on 64-bit Linux: a 16-byte name, then a 24-byte union whose first
    /// member here is `ifr_flags`.
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: i16,
        pad: [u8; 22],
    }

    // SAFETY: unshare(2) takes flags only; CLONE_NEWNET moves this thread alone.
    if unsafe { unshare(CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    let mut lo = IfReq {
        name: [0; 16],
        flags: 0,
        pad: [0; 22],
    };
    lo.name[..2].copy_from_slice(b"lo");
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write one `struct ifreq`, which `IfReq`
    // lays out (40 bytes); the socket is open for the duration.
    unsafe {
        if ioctl(socket.as_raw_fd(), SIOCGIFFLAGS, &mut lo as *mut IfReq) != 0 {
            return Err(io::Error::last_os_error());
        }
        lo.flags |= IFF_UP;
        if ioctl(socket.as_raw_fd(), SIOCSIFFLAGS, &mut lo as *mut IfReq) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The loader check itself: this test executable, linked against glibc, has an interpreter.
#[test]
fn the_loader_check_sees_a_dynamic_executable() {
    assert!(has_interpreter(&std::env::current_exe().unwrap()));
}

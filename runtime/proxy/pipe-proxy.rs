//! `pipe-proxy`: the stable entry point of a blue-green deployment (see
//! docs/deploy.md). A TCP proxy with no dependencies beyond std, built
//! statically by `runtime/build.rs` and embedded in `pipe`, which runs it as
//! the only file of a tiny image. It listens on its first argument
//! (`0.0.0.0:8080`) and forwards every new connection to the address written
//! in its upstream file (second argument, default `/etc/pipe-proxy/upstream`),
//! read again at each accept. Switching traffic is replacing that file (pipe
//! uploads it through the Engine API): new connections go to the new version,
//! connections already open finish on the old one. A file that is empty or
//! not `IP:PORT` followed by a newline (half written) is ignored and the last
//! good upstream is kept.

use std::io::Write as _;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

const DEFAULT_FILE: &str = "/etc/pipe-proxy/upstream";

/// Parses the upstream file: `IP:PORT\n` (a trailing newline proves it is whole).
pub fn parse_upstream(text: &str) -> Option<SocketAddr> {
    let line = text.strip_suffix('\n')?;
    let line = line.lines().next()?.trim();
    line.parse().ok()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "0.0.0.0:8080".to_string());
    let file = args.next().unwrap_or_else(|| DEFAULT_FILE.to_string());
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pipe-proxy: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("pipe-proxy: listening on {listen}, upstream from {file}");
    let mut current: Option<SocketAddr> = None;
    for conn in listener.incoming() {
        let Ok(client) = conn else { continue };
        if let Some(up) = std::fs::read_to_string(&file)
            .ok()
            .as_deref()
            .and_then(parse_upstream)
        {
            if current != Some(up) {
                eprintln!("pipe-proxy: upstream is now {up}");
                current = Some(up);
            }
        }
        let up = current;
        std::thread::spawn(move || serve(client, up));
    }
}

/// Connects to the upstream (a few tries: it may be restarting) and copies
/// both ways until each side closes; answers 502 when nothing is there.
fn serve(mut client: TcpStream, up: Option<SocketAddr>) {
    let _ = client.set_nodelay(true);
    let mut server = None;
    if let Some(addr) = up {
        for _ in 0..20 {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(s) => {
                    server = Some(s);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    let Some(server) = server else {
        let _ = client.write_all(
            b"HTTP/1.0 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\npipe-proxy: no upstream answers\n",
        );
        return;
    };
    let _ = server.set_nodelay(true);
    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up_thread = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        let _ = s2.shutdown(Shutdown::Write);
    });
    let mut server = server;
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(Shutdown::Write);
    let _ = up_thread.join();
}

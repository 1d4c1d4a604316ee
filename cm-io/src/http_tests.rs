use super::*;

use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn echo(req: &HttpRequest) -> HttpResponse {
    let status = if req.path == "/down" { 503 } else { 200 };
    let q: Vec<String> = req.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    HttpResponse::json(
        status,
        format!(
            "{{\"path\":\"{}\",\"query\":\"{}\",\"head\":{}}}",
            req.path,
            q.join(","),
            req.method == HttpMethod::Head
        )
        .into_bytes(),
    )
}

struct Server {
    addr: SocketAddr,
    stats: Arc<HttpStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(limits: HttpLimits) -> Server {
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(HttpStats::default());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(serve(
        listener,
        limits,
        Arc::new(echo),
        Arc::clone(&stats),
        async {
            let _ = rx.await;
        },
    ));
    Server {
        addr,
        stats,
        stop: Some(tx),
        task,
    }
}

impl Server {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

/// Sends one raw request (closing the connection) and returns the whole answer.
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("answer within 5 s")
        .unwrap();
    String::from_utf8(out).unwrap()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn get_and_head_reach_the_handler_with_the_decoded_query() {
    let srv = start(HttpLimits::default()).await;
    let a = raw(srv.addr, &get("/primary?instance=6001&lag=16%20MB&x")).await;
    assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
    assert!(a.contains("content-type: application/json\r\n"), "{a}");
    assert!(
        a.ends_with(r#"{"path":"/primary","query":"instance=6001,lag=16 MB,x=","head":false}"#),
        "{a}"
    );
    let a = raw(srv.addr, &get("/down")).await;
    assert!(a.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{a}");
    let head = "HEAD /primary HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let a = raw(srv.addr, head).await;
    assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
    assert!(a.ends_with("\r\n\r\n"), "HEAD has no body: {a}");
    assert_eq!(srv.stats.requests.load(Ordering::Relaxed), 3);
    srv.stop().await;
}

#[tokio::test]
async fn other_methods_bad_queries_and_long_targets_are_refused_before_the_handler() {
    let srv = start(HttpLimits::default()).await;
    let post =
        "POST /primary HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let a = raw(srv.addr, post).await;
    assert!(a.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{a}");
    assert!(a.contains("allow: GET, HEAD\r\n"), "{a}");
    let a = raw(srv.addr, &get("/primary?lag=%zz")).await;
    assert!(a.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{a}");
    let long = format!("/{}", "a".repeat(MAX_TARGET_LEN));
    let a = raw(srv.addr, &get(&long)).await;
    assert!(a.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{a}");
    srv.stop().await;
}

#[tokio::test]
async fn a_connection_over_the_limit_is_closed_at_once_and_counted() {
    let limits = HttpLimits {
        max_connections: 1,
        ..HttpLimits::default()
    };
    let srv = start(limits).await;
    // Holds the only slot (a request never finished).
    let mut idle = TcpStream::connect(srv.addr).await.unwrap();
    idle.write_all(b"GET /primary HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), second.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert_eq!(srv.stats.refused.load(Ordering::Relaxed), 1);
    drop(idle);
    // The slot comes back once the first connection is gone.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a = raw(srv.addr, &get("/primary")).await;
    assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
    srv.stop().await;
}

/// §16: connection counts are bounded per peer as well as in total. One address holding its
/// share of the slots (idle connections that never finish a request) is refused more, and
/// another address — the load balancer's checks — is still answered.
#[tokio::test]
async fn one_address_cannot_take_every_slot() {
    let limits = HttpLimits {
        max_connections: 4,
        max_per_address: 2,
        ..HttpLimits::default()
    };
    let srv = start(limits).await;
    let from = |ip: [u8; 4]| {
        let addr = srv.addr;
        async move {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(SocketAddr::from((ip, 0))).unwrap();
            s.connect(addr).await.unwrap()
        }
    };
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut c = from([127, 0, 0, 1]).await;
        c.write_all(b"GET /primary HTTP/1.1\r\n").await.unwrap();
        idle.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = from([127, 0, 0, 1]).await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "a third connection from the same address is closed unanswered"
    );
    assert_eq!(srv.stats.refused.load(Ordering::Relaxed), 1);
    // Another address still gets an answer while the first holds its share.
    let mut other = from([127, 0, 0, 2]).await;
    other.write_all(get("/primary").as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(2), other.read_to_string(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    // The first address's slots come back once its connections are gone.
    drop(idle);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a = raw(srv.addr, &get("/primary")).await;
    assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
    assert_eq!(srv.stats.refused.load(Ordering::Relaxed), 1);
    srv.stop().await;
}

#[tokio::test]
async fn a_client_that_sends_no_complete_head_is_dropped_at_the_request_timeout() {
    let limits = HttpLimits {
        request_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    };
    let srv = start(limits).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /primary HTTP/1.1\r\nHost").await.unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("closed by the server");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(3), "closed after {waited:?}");
    srv.stop().await;
}

#[test]
fn query_parsing_decodes_and_bounds() {
    assert_eq!(
        parse_query("a=1&b=x+y&c=%2Fz&&d").unwrap(),
        vec![
            ("a".into(), "1".into()),
            ("b".into(), "x y".into()),
            ("c".into(), "/z".into()),
            ("d".into(), String::new()),
        ]
    );
    assert!(
        parse_query("a=%4")
            .unwrap_err()
            .contains("bad percent escape")
    );
    assert!(parse_query("a=%ff").unwrap_err().contains("not UTF-8"));
    let many = vec!["k=v"; MAX_QUERY_PARAMS + 1].join("&");
    assert!(parse_query(&many).unwrap_err().contains("more than 16"));
    assert_eq!(
        parse_query(&vec!["k=v"; MAX_QUERY_PARAMS].join("&"))
            .unwrap()
            .len(),
        16
    );
}

/// A cluster's material in a temp dir and node `n1`'s reloadable TLS state.
fn tls_material() -> (tempfile::TempDir, Arc<crate::transport::Tls>) {
    crate::transport::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    crate::transport::certgen::write_cluster_material(
        dir.path(),
        "t",
        &["n1"],
        crate::transport::certgen::today(),
    )
    .unwrap();
    let files = crate::transport::TlsFiles {
        ca: dir.path().join("ca.crt"),
        cert: dir.path().join("n1.crt"),
        key: dir.path().join("n1.key"),
    };
    let tls = crate::transport::Tls::load(files, Default::default()).unwrap();
    (dir, Arc::new(tls))
}

async fn start_tls(tls: Arc<crate::transport::Tls>) -> Server {
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(HttpStats::default());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let limits = HttpLimits {
        request_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    };
    let task = tokio::spawn(serve_secure(
        listener,
        limits,
        Arc::new(echo),
        Arc::clone(&stats),
        async {
            let _ = rx.await;
        },
        Security::Tls(tls),
    ));
    Server {
        addr,
        stats,
        stop: Some(tx),
        task,
    }
}

async fn blocking_request(
    addr: SocketAddr,
    tls: Option<ClientTls>,
    target: &'static str,
) -> io::Result<(u16, String)> {
    tokio::task::spawn_blocking(move || {
        request(addr, tls.as_ref(), "GET", target, Duration::from_secs(5))
    })
    .await
    .unwrap()
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn https_with_the_cluster_ca_is_answered_and_plain_http_on_the_tls_port_is_not() {
    let (dir, tls) = tls_material();
    let server = start_tls(tls).await;
    let client = ClientTls::from_ca_file(&dir.path().join("ca.crt"), "n1").unwrap();

    let (status, body) = blocking_request(server.addr, Some(client.clone()), "/x?a=1")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"path\":\"/x\""), "{body}");
    assert_eq!(
        blocking_request(server.addr, Some(client.clone()), "/down")
            .await
            .unwrap()
            .0,
        503
    );
    assert_eq!(server.stats.handshake_failed.load(Ordering::Relaxed), 0);

    // Plain HTTP on the TLS port: no HTTP answer, the connection closed, counted.
    let answer = raw(server.addr, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(!answer.contains("HTTP/1.1"), "{answer:?}");
    assert!(!answer.contains("/x"), "{answer:?}");
    wait_for("the failed handshake is counted", || {
        server.stats.handshake_failed.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(server.stats.requests.load(Ordering::Relaxed), 2);

    // A client that verifies with the wrong name gets no answer (and the server counts it).
    let wrong = ClientTls::from_ca_file(&dir.path().join("ca.crt"), "n2").unwrap();
    assert!(
        blocking_request(server.addr, Some(wrong), "/x")
            .await
            .is_err()
    );
    wait_for("the refused client is counted", || {
        server.stats.handshake_failed.load(Ordering::Relaxed) == 2
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_silent_client_on_the_tls_port_is_closed_at_the_handshake_bound_and_the_loop_serves_on() {
    let (dir, tls) = tls_material();
    let server = start_tls(tls).await;
    let client = ClientTls::from_ca_file(&dir.path().join("ca.crt"), "n1").unwrap();
    // Connects and sends nothing: the handshake cannot start.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // Meanwhile another client is served.
    let started = Instant::now();
    assert_eq!(
        blocking_request(server.addr, Some(client), "/x")
            .await
            .unwrap()
            .0,
        200
    );
    // The silent one is closed after request_timeout (300 ms) and counted.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf))
        .await
        .expect("the server closes the silent connection")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(250));
    wait_for("the late handshake is counted", || {
        server.stats.handshake_failed.load(Ordering::Relaxed) == 1
    })
    .await;
    server.stop().await;
}

/// Several requests over one kept-alive connection, plain and HTTPS: each answer read whole
/// (status and body length), the server counting one connection for all of them.
#[tokio::test]
async fn a_kept_alive_connection_carries_many_requests() {
    let (dir, tls) = tls_material();
    let client = ClientTls::from_ca_file(&dir.path().join("ca.crt"), "n1").unwrap();
    let plain = start(HttpLimits::default()).await;
    let secure = start_tls(tls).await;
    for (server, tls) in [(plain, None), (secure, Some(client))] {
        let addr = server.addr;
        let got = tokio::task::spawn_blocking(move || {
            let mut c = KeptAlive::open(addr, tls.as_ref(), Duration::from_secs(5)).unwrap();
            ["/a", "/down", "/a?x=1"].map(|path| c.get(path).unwrap())
        })
        .await
        .unwrap();
        let len = |path: &str, query: Vec<(String, String)>| {
            let r = HttpRequest {
                method: HttpMethod::Get,
                path: path.into(),
                query,
            };
            echo(&r).body.len()
        };
        let q = vec![("x".to_owned(), "1".to_owned())];
        assert_eq!(
            got,
            [
                (200, len("/a", vec![])),
                (503, len("/down", vec![])),
                (200, len("/a", q))
            ]
        );
        assert_eq!(server.stats.requests.load(Ordering::Relaxed), 3);
        assert_eq!(server.stats.accepted.load(Ordering::Relaxed), 1);
        server.stop().await;
    }
}

#[tokio::test]
async fn plaintext_security_serves_plain_http() {
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(HttpStats::default());
    let task = tokio::spawn(serve_secure(
        listener,
        HttpLimits::default(),
        Arc::new(echo),
        Arc::clone(&stats),
        std::future::pending(),
        Security::Plaintext,
    ));
    assert_eq!(blocking_request(addr, None, "/x").await.unwrap().0, 200);
    task.abort();
}

#[tokio::test]
async fn a_reload_of_the_tls_files_applies_to_new_https_connections() {
    let (dir, tls) = tls_material();
    let server = start_tls(Arc::clone(&tls)).await;
    let old_ca = dir.path().join("old-ca.crt");
    std::fs::copy(dir.path().join("ca.crt"), &old_ca).unwrap();
    let old = ClientTls::from_ca_file(&old_ca, "n1").unwrap();
    assert_eq!(
        blocking_request(server.addr, Some(old.clone()), "/x")
            .await
            .unwrap()
            .0,
        200
    );

    // New material from a new CA in the same files, then the SIGHUP reload.
    crate::transport::certgen::write_cluster_material(
        dir.path(),
        "t2",
        &["n1"],
        crate::transport::certgen::today(),
    )
    .unwrap();
    tls.reload().unwrap();
    let new = ClientTls::from_ca_file(&dir.path().join("ca.crt"), "n1").unwrap();
    assert_eq!(
        blocking_request(server.addr, Some(new), "/x")
            .await
            .unwrap()
            .0,
        200
    );
    assert!(
        blocking_request(server.addr, Some(old), "/x")
            .await
            .is_err(),
        "the old CA still verifies the served certificate"
    );
    server.stop().await;
}

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

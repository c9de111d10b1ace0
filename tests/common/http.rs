//! A minimal HTTP/1.1 keep-alive client for the server tests and the load bench: enough to send
//! AWS JSON requests (`POST /` with `X-Amz-Target`) and read `Content-Length` responses.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

/// One keep-alive connection.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// A response: status, headers (lower-case names), body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; the empty body of a successful operation without output (as AWS
    /// answers CreateStream, AddTagsToStream, ...) as `{}`.
    pub fn json(&self) -> serde_json::Value {
        if self.body.is_empty() && self.status == 200 {
            return serde_json::json!({});
        }
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Client {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends raw bytes as a request (for malformed input), then reads the response.
    pub fn raw(&mut self, request: &[u8]) -> std::io::Result<Reply> {
        self.writer.write_all(request)?;
        self.read_reply()
    }

    /// Sends a request from another thread while reading the answer: for a body the server
    /// refuses before reading it all (the write may then fail; the answer is what counts).
    pub fn raw_while_reading(&mut self, request: Vec<u8>) -> std::io::Result<Reply> {
        let mut writer = self.writer.try_clone()?;
        let sending = std::thread::spawn(move || {
            let _ = writer.write_all(&request);
        });
        let reply = self.read_reply();
        let _ = sending.join();
        reply
    }

    /// `POST /` with a target, a content type and a body.
    pub fn post(
        &mut self,
        target: &str,
        content_type: &str,
        body: &[u8],
    ) -> std::io::Result<Reply> {
        let head = format!(
            "POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: {target}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.raw(&request)
    }

    /// A Kinesis JSON call.
    pub fn kinesis(&mut self, operation: &str, body: &serde_json::Value) -> std::io::Result<Reply> {
        self.post(
            &format!("Kinesis_20131202.{operation}"),
            "application/x-amz-json-1.1",
            &serde_json::to_vec(body).unwrap(),
        )
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> std::io::Result<Reply> {
        self.raw(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
    }

    fn read_reply(&mut self) -> std::io::Result<Reply> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// SubscribeToShard over HTTP/2 with curl (as the Java SDK does it), for `seconds`: the event
/// stream's messages, each as (headers as text, payload as text), both CRCs of each checked.
/// `None` when there is no curl with HTTP/2.
pub fn subscribe_h2(
    addr: SocketAddr,
    request: &serde_json::Value,
    seconds: u32,
) -> Option<Vec<(String, String)>> {
    let curl_h2 = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("HTTP2"));
    if !curl_h2 {
        return None;
    }
    let out = std::process::Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "--max-time"])
        .arg(seconds.to_string())
        .args(["-X", "POST"])
        .args(["-H", "X-Amz-Target: Kinesis_20131202.SubscribeToShard"])
        .args(["-H", "Content-Type: application/x-amz-json-1.1"])
        .args(["-d", &request.to_string()])
        .arg(format!("http://{addr}/"))
        .output()
        .expect("run curl");
    let mut events = Vec::new();
    let mut rest = &out.stdout[..];
    while rest.len() >= 16 {
        let total = u32::from_be_bytes(rest[0..4].try_into().unwrap()) as usize;
        let headers = u32::from_be_bytes(rest[4..8].try_into().unwrap()) as usize;
        let message = &rest[..total];
        assert_eq!(
            crc32fast::hash(&message[..8]).to_be_bytes(),
            message[8..12],
            "prelude CRC"
        );
        assert_eq!(
            crc32fast::hash(&message[..total - 4]).to_be_bytes(),
            message[total - 4..],
            "message CRC"
        );
        let header_text = String::from_utf8_lossy(&message[12..12 + headers]).into_owned();
        let payload = String::from_utf8_lossy(&message[12 + headers..total - 4]).into_owned();
        events.push((header_text, payload));
        rest = &rest[total..];
    }
    Some(events)
}

/// The records' data of a SubscribeToShard event stream ([`subscribe_h2`]'s messages): the first
/// message must be the initial response, every other one a `SubscribeToShardEvent`.
pub fn subscribed_records(events: &[(String, String)]) -> Vec<Vec<u8>> {
    use base64::Engine;
    assert!(events[0].0.contains("initial-response"), "{:?}", events[0]);
    let mut records = Vec::new();
    for (headers, payload) in &events[1..] {
        assert!(headers.contains("SubscribeToShardEvent"), "{headers}");
        let event: serde_json::Value = serde_json::from_str(payload).unwrap();
        for record in event["Records"].as_array().unwrap() {
            let data = record["Data"].as_str().unwrap();
            records.push(
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap(),
            );
        }
    }
    records
}

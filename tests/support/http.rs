//! The test side of the HTTP endpoints: a minimal HTTP/1.1 client (one
//! request per connection, `Connection: close`) and a strict parser of the
//! Prometheus text format (0.0.4) that `/metrics` serves.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one request may take: the endpoints answer from memory.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// An answer: status code and body.
#[derive(Clone, Debug)]
pub struct Answer {
    pub code: u16,
    pub content_type: String,
    pub body: String,
}

impl Answer {
    /// The body as JSON (the endpoints' bodies).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// `METHOD path` on 127.0.0.1:`port`; `None` when nothing answers
/// (connection refused, reset, or no answer in time).
pub async fn request(port: u16, method: &str, path: &str) -> Option<Answer> {
    let exchange = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        Some(raw)
    };
    let raw = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .ok()??;
    let text = String::from_utf8(raw).expect("an HTTP answer in UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP head");
    let mut lines = head.lines();
    let status = lines.next().expect("a status line");
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status:?}"));
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "this client reads no chunked bodies: {head}"
    );
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    Some(Answer {
        code,
        content_type,
        body: body.to_string(),
    })
}

/// `GET path`, which must be answered.
pub async fn get(port: u16, path: &str) -> Answer {
    request(port, "GET", path)
        .await
        .unwrap_or_else(|| panic!("nothing answers GET {path} on port {port}"))
}

/// The status code of `GET path`, `None` when nothing answers.
pub async fn code(port: u16, path: &str) -> Option<u16> {
    request(port, "GET", path).await.map(|a| a.code)
}

/// One sample of an exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    /// Metric family name -> type, from `# TYPE` lines.
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The samples named `name` whose labels include every pair of `with`.
    pub fn find(&self, name: &str, with: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && with
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the one sample `name` with `with`; panics unless
    /// exactly one matches.
    pub fn value(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        match self.find(name, with).as_slice() {
            [one] => one.value,
            other => panic!("{} samples {name}{with:?}: {other:?}", other.len()),
        }
    }

    /// The sum of the samples `name` with `with` (0 when none).
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.find(name, with).iter().map(|s| s.value).sum()
    }

    /// The value if exactly one sample matches, else `None`.
    pub fn get(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        match self.find(name, with).as_slice() {
            [one] => Some(one.value),
            _ => None,
        }
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the Prometheus text format, strictly: every line is a comment
/// (`# HELP`, `# TYPE`), blank, or a sample of a family whose `# TYPE`
/// came first; names and label names are valid; label values are quoted
/// with `\\`, `\"` and `\n` escapes; values are floats (or `+Inf`, `-Inf`,
/// `NaN`).
pub fn parse_metrics(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    for (i, line) in text.lines().enumerate() {
        let at = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without a type"))?;
            if !valid_name(name) {
                return Err(at("bad metric name"));
            }
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at("unknown type"));
            }
            if e.types.insert(name.to_string(), kind.to_string()).is_some() {
                return Err(at("a second TYPE for the family"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !valid_name(name) {
                return Err(at("bad metric name"));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(p) => line.split_at(p),
            None => return Err(at("a sample without a value")),
        };
        if !valid_name(name) {
            return Err(at("bad metric name"));
        }
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(inner) => parse_labels(inner).map_err(&at)?,
            None => (BTreeMap::new(), rest),
        };
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .ok_or_else(|| at("a sample without a value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| at("a value that is not a number"))?,
        };
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| at("a bad timestamp"))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing text"));
        }
        let family = [
            name,
            name.strip_suffix("_bucket").unwrap_or(name),
            name.strip_suffix("_sum").unwrap_or(name),
            name.strip_suffix("_count").unwrap_or(name),
        ];
        if !family.iter().any(|f| e.types.contains_key(*f)) {
            return Err(at("a sample before its family's TYPE"));
        }
        e.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(e)
}

/// The labels after a `{`, and what follows the closing `}`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), &'static str> {
    let mut labels = BTreeMap::new();
    let mut i = 0;
    let next = |i: &mut usize| {
        let c = s[*i..].chars().next()?;
        *i += c.len_utf8();
        Some(c)
    };
    loop {
        if s[i..].starts_with('}') {
            return Ok((labels, &s[i + 1..]));
        }
        let eq = s[i..].find('=').ok_or("a label without =")? + i;
        let key = &s[i..eq];
        if !valid_name(key) || key.contains(':') {
            return Err("a bad label name");
        }
        i = eq + 1;
        if next(&mut i) != Some('"') {
            return Err("a label value not quoted");
        }
        let mut value = String::new();
        loop {
            match next(&mut i).ok_or("an unclosed label value")? {
                '\\' => match next(&mut i) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    _ => return Err("a bad escape"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        if labels.insert(key.to_string(), value).is_some() {
            return Err("a label twice");
        }
        match next(&mut i) {
            Some(',') => {}
            Some('}') => return Ok((labels, &s[i..])),
            _ => return Err("expected , or } after a label"),
        }
    }
}

/// `GET /metrics` on `port`, parsed; panics on a malformed exposition.
pub async fn scrape(port: u16) -> Exposition {
    let a = get(port, "/metrics").await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert!(
        a.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        a.content_type
    );
    parse_metrics(&a.body).unwrap_or_else(|e| panic!("{e}\n{}", a.body))
}

#[test]
fn the_parser_is_strict() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\
                # TYPE h_seconds histogram\nh_seconds_bucket{le=\"+Inf\"} 1\nh_seconds_sum 0.5\n\
                h_seconds_count 1\n";
    let e = parse_metrics(good).unwrap();
    assert_eq!(e.value("a_total", &[("y", "q\"")]), 3.0);
    assert_eq!(e.value("h_seconds_count", &[]), 1.0);
    for bad in [
        "a 1\n",
        "# TYPE a gauge\na{x=1} 1\n",
        "# TYPE a gauge\na{x=\"1\"\n",
        "# TYPE a gauge\na one\n",
        "# TYPE a gauge\n1a 1\n",
        "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n",
        "# TYPE a nonsense\n",
    ] {
        assert!(parse_metrics(bad).is_err(), "{bad:?} parsed");
    }
}

//! Where `pgpilot demo` logs: a file in its directory, so that its
//! terminal shows the cluster and not the ~300 lines of PostgreSQL and
//! keeper logs a bring-up writes (`demo --verbose` logs to stderr).
//!
//! Tracing starts before the demo has a directory: lines until then are
//! kept in memory and written at the top of the file once it is named.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// The file, or the lines logged before it was named. A plain mutex: held
/// only for one write, never across an await.
static SINK: Mutex<Sink> = Mutex::new(Sink::Buffer(Vec::new()));

enum Sink {
    Buffer(Vec<u8>),
    File(File),
}

/// Sends the log (and what was buffered so far) to `path` from now on.
pub fn log_to(path: &Path) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    let mut sink = SINK.lock().unwrap_or_else(|p| p.into_inner());
    if let Sink::Buffer(early) = &*sink {
        file.write_all(early)?;
    }
    *sink = Sink::File(file);
    Ok(())
}

/// The `MakeWriter` of the tracing subscriber.
pub struct Writer;

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut *SINK.lock().unwrap_or_else(|p| p.into_inner()) {
            Sink::Buffer(b) => b.extend_from_slice(buf),
            // A log line that cannot be written is not worth stopping the
            // demo for.
            Sink::File(f) => {
                let _ = f.write_all(buf);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Writer {
    type Writer = Writer;
    fn make_writer(&'a self) -> Writer {
        Writer
    }
}

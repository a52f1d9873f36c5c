//! A container's log in the CRI format the kubelet reads
//! (`<RFC 3339 time> <stdout|stderr> <F|P> <text>`): one line per line the container
//! wrote, `P` for the pieces of a line longer than [`MAX_LINE`], rotated by size as the
//! kubelet's `containerLogMaxSize`/`containerLogMaxFiles` do.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A line longer than this is written in pieces marked `P` (partial), as CRI runtimes do.
pub const MAX_LINE: usize = 16 * 1024;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// Writes one container's log.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: usize,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    /// Opens (appending to) the log at `path`, to rotate past `max_size` bytes keeping
    /// `max_files` files in all.
    pub fn open(path: &Path, max_size: u64, max_files: usize) -> io::Result<LogWriter> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Takes bytes the container wrote to `stream`; whole lines are written at once, the
    /// rest waits for its end of line.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        let i = stream.index();
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.pending[i]);
            line.extend_from_slice(&rest[..nl]);
            self.emit(stream, &line, true)?;
            rest = &rest[nl + 1..];
        }
        self.pending[i].extend_from_slice(rest);
        while self.pending[i].len() >= MAX_LINE {
            let piece: Vec<u8> = self.pending[i].drain(..MAX_LINE).collect();
            self.emit(stream, &piece, false)?;
        }
        Ok(())
    }

    /// Writes what is left of a stream that ended without a final newline.
    pub fn finish(&mut self, stream: Stream) -> io::Result<()> {
        let line = std::mem::take(&mut self.pending[stream.index()]);
        if !line.is_empty() {
            self.emit(stream, &line, true)?;
        }
        Ok(())
    }

    fn emit(&mut self, stream: Stream, text: &[u8], full: bool) -> io::Result<()> {
        let mut record = format!(
            "{} {} {} ",
            jiff::Timestamp::now(),
            stream.name(),
            if full { 'F' } else { 'P' }
        )
        .into_bytes();
        record.extend_from_slice(text);
        record.push(b'\n');
        self.file.write_all(&record)?;
        self.size += record.len() as u64;
        if self.size >= self.max_size {
            self.rotate()?;
        }
        Ok(())
    }

    /// Renames the current file aside with its time and starts a new one; the oldest
    /// rotated files go so that `max_files` remain.
    fn rotate(&mut self) -> io::Result<()> {
        let stamp = jiff::Timestamp::now()
            .strftime("%Y%m%d-%H%M%S%.f")
            .to_string();
        let mut aside = self.path.clone().into_os_string();
        aside.push(format!(".{stamp}"));
        std::fs::rename(&self.path, &aside)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Ok(());
        };
        let prefix = format!("{}.", name.to_string_lossy());
        let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect();
        rotated.sort();
        let keep = self.max_files - 1;
        if rotated.len() > keep {
            for old in &rotated[..rotated.len() - keep] {
                std::fs::remove_file(old)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut parts = l.splitn(4, ' ');
                let time = parts.next().unwrap();
                assert!(time.parse::<jiff::Timestamp>().is_ok(), "{time}");
                (
                    parts.next().unwrap().to_string(),
                    parts.next().unwrap().to_string(),
                    parts.next().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn lines_streams_and_partials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = LogWriter::open(&path, 1 << 20, 5).unwrap();
        w.write(Stream::Stdout, b"hel").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"lo\nwor").unwrap();
        w.write(Stream::Stdout, &vec![b'x'; MAX_LINE + 3]).unwrap();
        w.finish(Stream::Stdout).unwrap();
        let got = lines(&path);
        assert_eq!(got[0], ("stderr".into(), "F".into(), "oops".into()));
        assert_eq!(got[1], ("stdout".into(), "F".into(), "hello".into()));
        assert_eq!(got[2].1, "P");
        assert!(got[2].2.starts_with("wor"));
        assert_eq!(got[2].2.len(), MAX_LINE);
        assert_eq!(got[3], ("stdout".into(), "F".into(), "xxxxxx".into()));
    }

    #[test]
    fn rotates_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = LogWriter::open(&path, 200, 3).unwrap();
        for i in 0..50 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 3, "the current file and two rotated ones");
        let last = lines(&path);
        assert!(last.last().is_none_or(|l| l.2 == "line 49"));
    }
}

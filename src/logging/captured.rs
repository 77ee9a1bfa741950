//! A writer the tests read back: what a subscriber wrote, and in how many writes. One for
//! every test that captures log lines (the batching writer's, the line format's, the
//! review's line).

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Default)]
pub struct Captured(Arc<Mutex<(Vec<u8>, usize)>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut captured = self.0.lock().unwrap();
        captured.0.extend_from_slice(bytes);
        captured.1 += 1;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
    }
    pub fn writes(&self) -> usize {
        self.0.lock().unwrap().1
    }
}

//! `muster-wal`: the on-call engineer's view of the write-ahead log (built with the durability
//! issue).

fn main() {
    eprintln!("muster-wal: not built yet");
    std::process::exit(2);
}

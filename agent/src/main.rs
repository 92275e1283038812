//! `sigil-agent`: the node agent. This first version only reports its version;
//! the Workload API arrives with the agent issue.

fn main() {
    println!("sigil-agent {}", env!("CARGO_PKG_VERSION"));
}

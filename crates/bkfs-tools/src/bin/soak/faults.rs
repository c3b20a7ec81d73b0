//! The soak's fault schedule: one random storage or API fault every 0.5–2 s, and disarming.

use super::*;

/// Arms one random fault every 0.5–2 s until the soak stops; returns how many of each.
pub fn inject_faults(server: &FakeServer, sh: &Shared, seed: u64) -> BTreeMap<&'static str, u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut armed = BTreeMap::new();
    while !sh.stopping() {
        let pause = Instant::now() + Duration::from_millis(rng.gen_range(500..2000));
        while Instant::now() < pause && !sh.stopping() {
            std::thread::sleep(Duration::from_millis(50));
        }
        if sh.stopping() {
            break;
        }
        let name = match rng.gen_range(0..5) {
            0 => {
                server.fail_storage(1, 503);
                "storage 503"
            }
            1 => {
                server.reset_storage(1);
                "storage reset"
            }
            2 => {
                server.truncate_storage(1);
                "storage truncate"
            }
            3 => {
                server.stall_storage(1, rng.gen_range(0..256 * KIB));
                "storage stall"
            }
            _ => {
                server.fail_api(1, 502);
                "api 502"
            }
        };
        *armed.entry(name).or_default() += 1;
    }
    armed
}

pub fn disarm(server: &FakeServer) {
    server.fail_storage(0, 503);
    server.reset_storage(0);
    server.truncate_storage(0);
    server.stall_storage(0, 0);
    server.fail_api(0, 502);
}

//! The warehouse's tenant handles stay bounded however many tenants a client names: past
//! [`MAX_IDLE_TENANT_HANDLES`], idle handles are dropped, and a tenant with live spans keeps
//! its handle and its spans.

mod common;

use tracehouse_warehouse::{MAX_IDLE_TENANT_HANDLES, Warehouse, WarehouseConfig};

#[tokio::test]
async fn idle_tenant_handles_are_bounded_and_live_spans_kept() {
    let dir = tempfile::tempdir().unwrap();
    let w = Warehouse::open(WarehouseConfig::local(dir.path())).await.unwrap();
    let now_ns = 1_700_000_000_000_000_000;
    w.append("busy", common::spans(&[(7, 0..5, now_ns)])).await.unwrap();
    for i in 0..3 * MAX_IDLE_TENANT_HANDLES {
        w.tenant(&format!("t{i}")).unwrap();
        assert!(w.tenant_handles() <= MAX_IDLE_TENANT_HANDLES + 1, "after {i}");
    }
    assert!(w.tenant_handles() > 1);
    let found = w.trace_by_id("busy", 7, None).await.unwrap();
    assert_eq!(found.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
    // A held handle is never dropped: two handles of one tenant would split its live spans.
    let held = w.tenant("held").unwrap();
    for i in 0..2 * MAX_IDLE_TENANT_HANDLES {
        w.tenant(&format!("u{i}")).unwrap();
    }
    assert!(std::sync::Arc::ptr_eq(&held, &w.tenant("held").unwrap()));
    // Reading a tenant that has no data creates no handle.
    let before = w.tenant_handles();
    assert!(w.trace_by_id("nobody", 7, None).await.unwrap().batches.is_empty());
    assert_eq!(w.tenant_handles(), before);
}

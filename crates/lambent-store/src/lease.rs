//! A leased delivery as its holder sees it: settled once, and nak'ed when dropped
//! unsettled (a panicking or cancelled attempt hands its delivery back at once
//! instead of holding it until the lease runs out).

use crate::{Delivery, EventLog, InvocationRecord, Result, Settlement};
use std::sync::Arc;

pub struct Lease {
    log: Arc<dyn EventLog>,
    delivery: Delivery,
    settled: bool,
}

impl Lease {
    pub fn new(log: Arc<dyn EventLog>, delivery: Delivery) -> Self {
        Self {
            log,
            delivery,
            settled: false,
        }
    }

    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    pub fn delivery_mut(&mut self) -> &mut Delivery {
        &mut self.delivery
    }

    /// Settles the delivery and records its attempt in one write.
    pub async fn settle(
        mut self,
        settlement: Settlement,
        record: Option<InvocationRecord>,
    ) -> Result<()> {
        self.settled = true;
        self.log
            .settle(self.delivery.lease(), settlement, record)
            .await
    }

    /// The attempt never started: hand the delivery back without charging it.
    pub async fn release(mut self) -> Result<()> {
        self.settled = true;
        self.log.release(self.delivery.lease()).await
    }

    /// The attempt is still running: push the lease's end out to `lease_ms` from now.
    pub async fn extend(&self, lease_ms: i64) -> Result<()> {
        self.log.extend(self.delivery.lease(), lease_ms).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime left: the lease runs out instead
        };
        let (log, lease) = (self.log.clone(), self.delivery.lease());
        runtime.spawn(async move {
            if let Err(e) = log
                .nak(lease, 0, "the attempt ended without reporting")
                .await
            {
                tracing::debug!(delivery = lease.delivery, error = %e, "could not hand back a dropped lease");
            }
        });
    }
}

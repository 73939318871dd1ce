//! [`Pool`]: a few PostgreSQL connections shared by an inbox's partition workers.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Config};

/// At most `size` connections, opened on demand; a closed one is dropped and replaced.
pub(crate) struct Pool {
    config: Config,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
}

/// A connection taken from the pool; it goes back when dropped (unless closed).
pub(crate) struct Pooled<'a> {
    client: Option<Client>,
    pool: &'a Pool,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    pub fn new(config: Config, size: usize) -> Self {
        Pool { config, idle: Mutex::default(), permits: Arc::new(Semaphore::new(size.max(1))) }
    }

    /// A connection: an idle one that is still open, or a new one.
    pub async fn get(&self) -> Result<Pooled<'_>, tokio_postgres::Error> {
        // The semaphore is never closed.
        let permit = self.permits.clone().acquire_owned().await.unwrap_or_else(|_| unreachable!("the pool's semaphore is never closed"));
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|c| !c.is_closed());
            idle.pop()
        };
        let client = match idle {
            Some(client) => client,
            None => crate::connect::connect(&self.config).await?,
        };
        Ok(Pooled { client: Some(client), pool: self, _permit: permit })
    }
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && !client.is_closed()
        {
            self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(client);
        }
    }
}

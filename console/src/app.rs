//! Builds and runs the console: binds the port, starts the metrics sampler,
//! serves until the shutdown future resolves, then ends every live stream.

use std::future::Future;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{self, AppState};
use crate::kafka::KafkaView;
use crate::metrics_history::MetricsHistory;
use crate::services::Services;

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    port: u16,
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        config.validate()?;
        let kafka = KafkaView::new(
            &service_kit::kafka::KafkaConnection::of(&config.common),
            config.console_kafka_timeout,
            config.known_groups(),
        )?;
        let services = Services::new(&config)?;
        let history = MetricsHistory::new(config.console_metrics_samples);
        let shutdown = CancellationToken::new();
        tokio::spawn(history.clone().sample_until(
            services.clone(),
            config.console_metrics_interval,
            shutdown.clone(),
        ));
        let policy = service_kit::http::AccessPolicy::from_config(&config.common).await?;
        let router = http::router(AppState {
            kafka,
            services,
            history,
            page_size: config.console_page_size,
            max_message_bytes: config.console_max_message_bytes,
            search_depth: config.console_search_depth,
            live_poll: config.console_live_poll,
            shutdown: shutdown.clone(),
            topics: config.common.topics(),
        });
        let router = http::access::guard(router, policy);
        let address = format!("{}:{}", config.common.host, config.common.port);
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let port = listener.local_addr()?.port();
        Ok(Application {
            listener,
            router,
            port,
            shutdown,
        })
    }

    /// The bound port (the real one when configured with 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let token = self.shutdown.clone();
        tracing::info!(port = self.port, "console listening");
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            token.cancel();
        })
        .await
        .context("serving HTTP")
    }
}

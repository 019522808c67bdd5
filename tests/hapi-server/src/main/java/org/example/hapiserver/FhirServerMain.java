package org.example.hapiserver;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.JpaSystemProvider;
import ca.uhn.fhir.jpa.interceptor.UserRequestRetryVersionConflictsInterceptor;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.util.thread.QueuedThreadPool;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;

/**
 * Starts the HAPI FHIR JPA server (R4): Spring context, then a RestfulServer servlet
 * under /fhir/* in an embedded Jetty 12 (ee10).
 * <p>
 * Settings (system property, then environment variable, then default):
 * hapi.port / HAPI_PORT (8089), hapi.host / HAPI_HOST (127.0.0.1).
 */
public final class FhirServerMain {

	private static final Logger LOG = LoggerFactory.getLogger(FhirServerMain.class);

	private FhirServerMain() {}

	public static void main(String[] args) {
		try {
			run();
		} catch (Throwable t) {
			// Fail fast: without this, non-daemon threads started by a half-built context
			// could keep a JVM alive that never serves requests.
			LOG.error("HAPI FHIR server failed to start", t);
			System.exit(1);
		}
	}

	private static void run() throws Exception {
		long t0 = System.nanoTime();
		int port = Integer.parseInt(setting("hapi.port", "HAPI_PORT", "8089"));
		String host = setting("hapi.host", "HAPI_HOST", "127.0.0.1");

		AnnotationConfigApplicationContext spring = new AnnotationConfigApplicationContext(HapiJpaServerConfig.class);
		LOG.info("Spring context ready after {} ms", (System.nanoTime() - t0) / 1_000_000);

		RestfulServer fhirServlet = buildRestfulServer(spring);

		QueuedThreadPool threads = new QueuedThreadPool(Integer.getInteger("hapi.http.threads", 40), 4);
		threads.setName("http");
		Server jetty = new Server(threads);
		ServerConnector connector = new ServerConnector(jetty);
		connector.setHost(host);
		connector.setPort(port);
		jetty.addConnector(connector);

		ServletContextHandler context = new ServletContextHandler();
		context.setContextPath("/");
		ServletHolder holder = new ServletHolder("fhir", fhirServlet);
		holder.setInitOrder(1); // initialise (scan providers) at start-up, not on first request
		context.addServlet(holder, "/fhir/*");
		jetty.setHandler(context);
		jetty.setStopTimeout(10_000);

		Runtime.getRuntime().addShutdownHook(new Thread(() -> {
			LOG.info("Shutting down");
			try {
				jetty.stop();
			} catch (Exception e) {
				LOG.warn("Error stopping Jetty", e);
			}
			spring.close();
		}, "shutdown"));

		jetty.start();
		LOG.info("HAPI FHIR R4 server ({}) ready at http://{}:{}/fhir after {} ms",
				HapiJpaServerConfig.databaseDescription(), host, connector.getLocalPort(),
				(System.nanoTime() - t0) / 1_000_000);
		jetty.join();
	}

	static RestfulServer buildRestfulServer(AnnotationConfigApplicationContext spring) {
		FhirContext fhirContext = spring.getBean(FhirContext.class);
		RestfulServer server = new RestfulServer(fhirContext);
		server.setDefaultResponseEncoding(EncodingEnum.JSON);
		server.setDefaultPrettyPrint(false);

		// One JPA resource provider per resource type (read, search, create, $validate,
		// Patient/$everything, ...), and the system provider (transaction, batch).
		server.registerProviders(spring.getBean(ResourceProviderFactory.class).createProviders());
		server.registerProvider(spring.getBean(JpaSystemProvider.class));

		server.setPagingProvider(spring.getBean(DatabaseBackedPagingProvider.class));

		@SuppressWarnings("unchecked")
		IFhirSystemDao<?, ?> systemDao = spring.getBean(IFhirSystemDao.class);
		JpaCapabilityStatementProvider capabilities = new JpaCapabilityStatementProvider(
				server,
				systemDao,
				spring.getBean(JpaStorageSettings.class),
				spring.getBean(ISearchParamRegistry.class),
				spring.getBean(IValidationSupport.class));
		capabilities.setImplementationDescription(
				"HAPI FHIR JPA test server (" + HapiJpaServerConfig.databaseDescription()
						+ (requestValidationEnabled() ? ", request validation on" : ", request validation off") + ")");
		server.setServerConformanceProvider(capabilities);

		// Request validation is on by default: the tests rely on HAPI refusing what the R4
		// specification forbids. HAPI_REQUEST_VALIDATION=false turns it off, as in HAPI's own
		// JPA starter, whose default is no request validation; the push benchmarks measure both.
		if (requestValidationEnabled()) {
			server.registerInterceptor(spring.getBean(RequestValidatingInterceptor.class));
		}
		// Opt-in per request: "X-Retry-On-Version-Conflict: retry; max-retries=N" makes the
		// server retry an operation that lost a race (HTTP 409), e.g. two concurrent
		// conditional creates of the same identifier; the retry then finds the winner's resource.
		server.registerInterceptor(new UserRequestRetryVersionConflictsInterceptor());
		return server;
	}

	/** {@code hapi.request.validation} or {@code HAPI_REQUEST_VALIDATION}; true unless "false". */
	static boolean requestValidationEnabled() {
		return !"false".equalsIgnoreCase(setting("hapi.request.validation", "HAPI_REQUEST_VALIDATION", "true"));
	}

	private static String setting(String property, String env, String dflt) {
		String v = System.getProperty(property);
		if (v == null || v.isBlank()) {
			v = System.getenv(env);
		}
		return (v == null || v.isBlank()) ? dflt : v.trim();
	}
}

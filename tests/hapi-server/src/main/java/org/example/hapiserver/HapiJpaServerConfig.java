package org.example.hapiserver;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.binary.api.IBinaryStorageSvc;
import ca.uhn.fhir.jpa.binstore.MemoryBinaryStorageSvcImpl;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirPostgresDialect;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import jakarta.persistence.EntityManagerFactory;
import org.apache.commons.dbcp2.BasicDataSource;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

import javax.sql.DataSource;
import java.util.Properties;

/**
 * Spring wiring of the HAPI FHIR JPA server (R4) on an in-memory H2 database, or on
 * PostgreSQL when {@code HAPI_JDBC_URL} (environment, so that the password it carries does
 * not show in the process list) or {@code -Dhapi.jdbc.url} is a {@code jdbc:postgresql:} URL.
 * HAPI's own configuration classes supply the DAOs, resource providers, search,
 * batch2 and validation services; this class supplies what they expect the
 * application to provide.
 */
@Configuration
@Import({
	JpaR4Config.class,
	HapiJpaConfig.class,
	JpaBatch2Config.class,
	Batch2JobsConfig.class,
	ThreadPoolFactoryConfig.class,
	// in-memory message channels (IBrokerClient) that batch2 needs; no subscription processing
	SubscriptionChannelConfig.class,
	RequestValidationConfig.class
})
public class HapiJpaServerConfig {

	/** Database connections; H2 in memory is fast, a small pool is plenty. */
	static final int DB_POOL_SIZE = Integer.getInteger("hapi.db.pool", 20);

	static final String H2_MEMORY_URL = "jdbc:h2:mem:hapi_r4;DB_CLOSE_DELAY=-1";

	/** The JDBC URL: environment, then system property, then a fresh in-memory H2 database. */
	static String jdbcUrl() {
		String url = System.getenv("HAPI_JDBC_URL");
		if (url == null || url.isBlank()) {
			url = System.getProperty("hapi.jdbc.url");
		}
		return (url == null || url.isBlank()) ? H2_MEMORY_URL : url.trim();
	}

	static boolean onPostgres() {
		return jdbcUrl().startsWith("jdbc:postgresql:");
	}

	/** What the capability statement and the start-up log say the data lives in. */
	static String databaseDescription() {
		return onPostgres() ? "PostgreSQL" : "in-memory H2";
	}

	@Bean(destroyMethod = "close")
	public BasicDataSource dataSource() {
		BasicDataSource ds = new BasicDataSource();
		String url = jdbcUrl();
		if (onPostgres()) {
			// Credentials ride in the URL (?user=...&password=...), as tests/postgres/pg.sh
			// prints them.
			ds.setDriver(new org.postgresql.Driver());
		} else {
			ds.setDriver(new org.h2.Driver());
			// A fresh database per JVM; DB_CLOSE_DELAY=-1 keeps it for the JVM's lifetime.
			ds.setUsername("sa");
			ds.setPassword("");
		}
		ds.setUrl(url);
		ds.setMaxTotal(DB_POOL_SIZE);
		ds.setMaxWait(java.time.Duration.ofSeconds(30));
		return ds;
	}

	@Bean
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			ConfigurableListableBeanFactory beanFactory,
			FhirContext fhirContext,
			JpaStorageSettings storageSettings,
			DataSource dataSource) {
		LocalContainerEntityManagerFactoryBean emf =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
		emf.setPersistenceUnitName("HAPI_PU");
		emf.setDataSource(dataSource);
		Properties props = new Properties();
		props.put("hibernate.dialect",
				(onPostgres() ? HapiFhirPostgresDialect.class : HapiFhirH2Dialect.class).getName());
		props.put("hibernate.hbm2ddl.auto", "update");
		props.put("hibernate.search.enabled", "false");
		props.put("hibernate.format_sql", "false");
		props.put("hibernate.show_sql", "false");
		props.put("hibernate.jdbc.batch_size", "20");
		props.put("hibernate.cache.use_query_cache", "false");
		props.put("hibernate.cache.use_second_level_cache", "false");
		props.put("hibernate.cache.use_structured_entries", "false");
		props.put("hibernate.cache.use_minimal_puts", "false");
		emf.setJpaProperties(props);
		return emf;
	}

	@Bean
	@Primary
	public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
		JpaTransactionManager tm = new JpaTransactionManager();
		tm.setEntityManagerFactory(entityManagerFactory);
		return tm;
	}

	@Bean
	public JpaStorageSettings storageSettings() {
		JpaStorageSettings s = new JpaStorageSettings();
		// Tests must see fresh results: never hand back a cached search.
		s.setReuseCachedSearchResultsForMillis(null);
		// Conditional deletes that match several resources are allowed.
		s.setAllowMultipleDelete(true);
		// Optional, for the concurrency experiments (see README): -Dhapi.matchUrlCache=true
		if (Boolean.getBoolean("hapi.matchUrlCache")) {
			s.setMatchUrlCacheEnabled(true);
		}
		return s;
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		return new SubscriptionSettings();
	}

	@Bean
	public IBinaryStorageSvc binaryStorageSvc() {
		return new MemoryBinaryStorageSvcImpl();
	}
}

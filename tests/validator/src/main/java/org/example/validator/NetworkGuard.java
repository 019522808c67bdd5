package org.example.validator;

import java.security.Permission;
import java.util.ArrayList;
import java.util.List;

/**
 * Refuses, and records, every network access the validator's JVM attempts.
 * <p>
 * The validator must never reach a terminology or package server: its verdicts have to come
 * from the packages we pinned, not from whatever a remote server says today. Nothing in the
 * chain we build is configured with a remote service, but the HL7 engine and its libraries
 * could still try (package-cache managers, terminology clients). This guard turns any such
 * attempt into a failure that is also counted, so the test suite can assert "zero attempts"
 * after validating every example instead of trusting the configuration.
 * <p>
 * A {@link SecurityManager} sees every socket connect, DNS lookup ({@code checkConnect(host,
 * -1)}), listen, accept and multicast of the JVM, whichever library opens it. It is deprecated
 * (JEP 411) but still works on Java 17 with {@code -Djava.security.manager=allow}, which
 * validator.sh passes. On a JVM where it cannot be installed, {@link #install()} returns a guard
 * that reports itself inactive; the test suite then insists on the other barrier, a network
 * namespace with no interfaces but loopback (validator.sh runs the JVM under
 * {@code unshare --net} when it can).
 */
final class NetworkGuard extends SecurityManager {

	private final List<String> attempts = new ArrayList<>();
	private final List<String> probeAttempts = new ArrayList<>();
	/** Set on the thread that runs a deliberate probe of the guard (see ValidationService). */
	private final ThreadLocal<Boolean> probing = ThreadLocal.withInitial(() -> Boolean.FALSE);
	private volatile boolean active;

	private NetworkGuard() {}

	/** Installs the guard as the JVM's security manager, if this JVM still allows that. */
	static NetworkGuard install() {
		NetworkGuard guard = new NetworkGuard();
		try {
			System.setSecurityManager(guard);
			guard.active = true;
		} catch (UnsupportedOperationException | SecurityException e) {
			guard.active = false;
		}
		return guard;
	}

	boolean isActive() {
		return active;
	}

	/** Every attempt so far outside probes, as "what host:port", oldest first. */
	synchronized List<String> attempts() {
		return new ArrayList<>(attempts);
	}

	/** Attempts made by deliberate probes of the guard. */
	synchronized List<String> probeAttempts() {
		return new ArrayList<>(probeAttempts);
	}

	/** Runs {@code probe} with its attempts recorded as probe attempts. */
	void probe(Runnable probe) {
		probing.set(Boolean.TRUE);
		try {
			probe.run();
		} finally {
			probing.set(Boolean.FALSE);
		}
	}

	private void refuse(String what, String host, int port) {
		synchronized (this) {
			(probing.get() ? probeAttempts : attempts).add(what + " " + host + ":" + port);
		}
		throw new SecurityException(
				"network access is forbidden in the offline validator: " + what + " " + host + ":" + port);
	}

	@Override
	public void checkConnect(String host, int port) {
		refuse(port == -1 ? "resolve" : "connect", host, port);
	}

	@Override
	public void checkConnect(String host, int port, Object context) {
		checkConnect(host, port);
	}

	@Override
	public void checkListen(int port) {
		refuse("listen", "*", port);
	}

	@Override
	public void checkAccept(String host, int port) {
		refuse("accept", host, port);
	}

	@Override
	public void checkMulticast(java.net.InetAddress address) {
		refuse("multicast", address.getHostAddress(), -1);
	}

	/** Everything that is not network access stays allowed (files, threads, reflection...). */
	@Override
	public void checkPermission(Permission permission) {}

	@Override
	public void checkPermission(Permission permission, Object context) {}
}

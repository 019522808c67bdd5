package org.example.validator;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationOptions;
import ca.uhn.fhir.validation.ValidationResult;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.NetworkInterface;
import java.net.Socket;
import java.util.Collections;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;

/**
 * The line protocol: one JSON request per line in, one JSON answer per line out, in order.
 *
 * <pre>
 * {"id": "any", "resource": {FHIR R4 JSON}, "profiles": ["canonical url", ...]}
 *   validates the resource (a Bundle validates every entry) against base R4, against the
 *   profiles in its own meta.profile (the engine always does that) and against "profiles";
 *   answers {"id": "any", "ms": 12, "messages": [{"severity": "error", "location": "...",
 *   "line": 1, "col": 2, "message": "...", "messageId": "..."}]}
 * {"op": "status"}
 *   answers {"op": "status", "validated": n, "guard": true, "networkAttempts": [...],
 *   "probeAttempts": n, "interfaces": ["lo up", ...] (none in an empty network namespace), "packages": {"name@version": count},
 *   "heapUsedMb": n}
 * {"op": "probe-network", "port": n}
 *   tries to resolve "localhost" and to open a TCP connection to 127.0.0.1:port, to show that
 *   the guard refuses both; answers what happened to each. Its attempts are counted in
 *   probeAttempts, not in networkAttempts.
 * </pre>
 * A request that cannot be handled gets {"id": ..., "error": "..."}; the service goes on.
 */
final class ValidationService {

	private final ObjectMapper json = new ObjectMapper();
	private final FhirValidator validator;
	private final NetworkGuard guard;
	private final IgPackages packages;
	private int validated;

	ValidationService(FhirContext context, FhirInstanceValidator module, NetworkGuard guard, IgPackages packages) {
		this.validator = context.newValidator();
		this.validator.registerValidatorModule(module);
		this.guard = guard;
		this.packages = packages;
	}

	/** One small validation, so the R4 core structures are loaded before the first request. */
	void warmUp() {
		validator.validateWithResult("{\"resourceType\": \"Patient\", \"gender\": \"female\"}");
	}

	void serve(BufferedReader in, BufferedWriter out) throws IOException {
		String line;
		while ((line = in.readLine()) != null) {
			if (line.isBlank()) {
				continue;
			}
			ObjectNode answer;
			JsonNode request = null;
			try {
				request = json.readTree(line);
				answer = handle(request);
			} catch (Exception | StackOverflowError e) {
				answer = json.createObjectNode();
				if (request != null && request.has("id")) {
					answer.set("id", request.get("id"));
				}
				answer.put("error", e.getClass().getSimpleName() + ": " + e.getMessage());
			}
			out.write(json.writeValueAsString(answer));
			out.write('\n');
			out.flush();
		}
	}

	private ObjectNode handle(JsonNode request) throws IOException {
		String op = request.path("op").asText("validate");
		return switch (op) {
			case "validate" -> validate(request);
			case "status" -> status();
			case "probe-network" -> probeNetwork(request.path("port").asInt(9));
			default -> throw new IllegalArgumentException("unknown op '" + op + "'");
		};
	}

	private ObjectNode validate(JsonNode request) throws IOException {
		JsonNode resource = request.get("resource");
		if (resource == null || !resource.isObject()) {
			throw new IllegalArgumentException("'resource' must be a FHIR resource (a JSON object)");
		}
		ValidationOptions options = new ValidationOptions();
		for (JsonNode profile : request.path("profiles")) {
			options.addProfile(profile.asText());
		}
		long t0 = System.nanoTime();
		ValidationResult result = validator.validateWithResult(json.writeValueAsString(resource), options);
		long ms = (System.nanoTime() - t0) / 1_000_000;
		validated++;

		ObjectNode answer = json.createObjectNode();
		answer.set("id", request.get("id"));
		answer.put("ms", ms);
		ArrayNode messages = answer.putArray("messages");
		for (SingleValidationMessage message : result.getMessages()) {
			ObjectNode item = messages.addObject();
			item.put("severity", message.getSeverity().getCode());
			item.put("location", message.getLocationString());
			if (message.getLocationLine() != null) {
				item.put("line", message.getLocationLine());
			}
			if (message.getLocationCol() != null) {
				item.put("col", message.getLocationCol());
			}
			item.put("message", message.getMessage());
			item.put("messageId", message.getMessageId());
		}
		return answer;
	}

	private ObjectNode status() throws IOException {
		ObjectNode answer = json.createObjectNode();
		answer.put("op", "status");
		answer.put("validated", validated);
		answer.put("guard", guard.isActive());
		ArrayNode attempts = answer.putArray("networkAttempts");
		guard.attempts().forEach(attempts::add);
		answer.put("probeAttempts", guard.probeAttempts().size());
		ArrayNode interfaces = answer.putArray("interfaces");
		try {
			for (NetworkInterface nif : Collections.list(NetworkInterface.getNetworkInterfaces())) {
				interfaces.add(nif.getName() + (nif.isUp() ? " up" : " down"));
			}
		} catch (java.net.SocketException e) {
			// An empty network namespace: the JDK finds no configured interface at all.
		}
		ObjectNode loaded = answer.putObject("packages");
		packages.countsByPackage().forEach(loaded::put);
		answer.put("packageResourcesParsed", packages.parsedCount());
		Runtime runtime = Runtime.getRuntime();
		answer.put("heapUsedMb", (runtime.totalMemory() - runtime.freeMemory()) / (1024 * 1024));
		return answer;
	}

	/**
	 * Proof that the guard works: two harmless attempts (a lookup of "localhost", a connection
	 * to the loopback address) that it must refuse. They are recorded apart from the attempts
	 * the other tests count.
	 */
	private ObjectNode probeNetwork(int port) {
		ObjectNode answer = json.createObjectNode();
		answer.put("op", "probe-network");
		int before = guard.probeAttempts().size();
		guard.probe(() -> {
			try {
				InetAddress.getByName("localhost");
				answer.put("resolve", "resolved");
			} catch (SecurityException e) {
				answer.put("resolve", "refused: " + e.getMessage());
			} catch (IOException e) {
				answer.put("resolve", "failed: " + e);
			}
			try (Socket socket = new Socket()) {
				socket.connect(
						new InetSocketAddress(InetAddress.getByAddress(new byte[] {127, 0, 0, 1}), port), 2000);
				answer.put("connect", "connected");
			} catch (SecurityException e) {
				answer.put("connect", "refused: " + e.getMessage());
			} catch (IOException e) {
				answer.put("connect", "failed: " + e);
			}
		});
		answer.put("attempts", guard.probeAttempts().size() - before);
		return answer;
	}
}

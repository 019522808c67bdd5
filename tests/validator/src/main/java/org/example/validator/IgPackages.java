package org.example.validator;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.context.support.ValidationSupportContext;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.BufferedInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.zip.GZIPInputStream;
import org.apache.commons.compress.archivers.tar.TarArchiveEntry;
import org.apache.commons.compress.archivers.tar.TarArchiveInputStream;
import org.hl7.fhir.instance.model.api.IBaseResource;

/**
 * The conformance resources (StructureDefinitions, CodeSystems, ValueSets) of npm IG packages,
 * read straight from the {@code .tgz} files {@code npm pack} wrote, served to the validation
 * support chain.
 * <p>
 * Why not HAPI's PrePopulatedValidationSupport: it wants every resource parsed up front, and
 * the terminology package alone has about 3,400 of them, of which a validation run touches a
 * few dozen; parsing them all took most of the validator's start-up. Here a package is indexed
 * at start (canonical URL and version read with a streaming parser, the bytes kept) and a
 * resource is parsed the first time the engine asks for it. Lookups answer what
 * PrePopulatedValidationSupport would: by URL, by {@code url|version}, and by the short forms
 * {@code id} and {@code Type/id} of the URL.
 * <p>
 * No package cache and no package manager are involved, so nothing here can try to download a
 * missing dependency. When two packages define the same URL, the one listed first wins: the
 * order on the command line is the precedence.
 */
final class IgPackages implements IValidationSupport {

	private static final Set<String> TYPES = Set.of("StructureDefinition", "CodeSystem", "ValueSet");

	/** One resource of a package: where it is from, its bytes, and, once asked for, its parse. */
	private static final class Entry {
		final String type;
		final String pkg;
		final byte[] json;

		Entry(String type, String pkg, byte[] json) {
			this.type = type;
			this.pkg = pkg;
			this.json = json;
		}
	}

	private final FhirContext context;
	private final Map<String, Entry> byUrl = new HashMap<>();
	private final List<Entry> entries = new ArrayList<>();
	private final Map<Entry, IBaseResource> parsed = new ConcurrentHashMap<>();
	private final Map<String, Integer> countsByPackage = new LinkedHashMap<>();
	private final JsonFactory jsonFactory = new JsonFactory();

	private IgPackages(FhirContext context) {
		this.context = context;
	}

	static IgPackages load(FhirContext context, List<Path> tarballs) throws IOException {
		IgPackages packages = new IgPackages(context);
		for (Path tarball : tarballs) {
			packages.index(tarball);
		}
		return packages;
	}

	private void index(Path tarball) throws IOException {
		Map<String, byte[]> files = new LinkedHashMap<>();
		byte[] manifest = null;
		try (TarArchiveInputStream tar = new TarArchiveInputStream(
				new GZIPInputStream(new BufferedInputStream(Files.newInputStream(tarball))))) {
			TarArchiveEntry entry;
			while ((entry = tar.getNextEntry()) != null) {
				String name = entry.getName();
				// Conformance resources sit directly in package/; examples and others are in subfolders.
				if (entry.isDirectory() || !name.startsWith("package/") || name.indexOf('/', 8) != -1) {
					continue;
				}
				if (name.equals("package/package.json")) {
					manifest = tar.readAllBytes();
				} else if (name.endsWith(".json") && !name.startsWith("package/.")) {
					files.put(name, tar.readAllBytes());
				}
			}
		}
		if (manifest == null) {
			throw new IOException(tarball + " is not an npm FHIR package (no package/package.json)");
		}
		var info = new com.fasterxml.jackson.databind.ObjectMapper().readTree(manifest);
		String pkg = info.path("name").asText() + "@" + info.path("version").asText();
		String fhirVersions = info.path("fhirVersions").toString();
		if (!fhirVersions.contains("4.0")) {
			throw new IOException(pkg + " is for FHIR " + fhirVersions + ", not R4 (4.0.x)");
		}
		int count = 0;
		for (byte[] json : files.values()) {
			String[] head = head(json);
			String type = head[0];
			String url = head[1];
			String version = head[2];
			if (type == null || !TYPES.contains(type) || url == null || byUrl.containsKey(url)) {
				continue;
			}
			Entry entry = new Entry(type, pkg, json);
			entries.add(entry);
			for (String key : keys(url, version)) {
				byUrl.putIfAbsent(key, entry);
			}
			count++;
		}
		countsByPackage.put(pkg, count);
	}

	/** resourceType, url and version of a resource, read without building the whole tree. */
	private String[] head(byte[] json) throws IOException {
		String[] head = new String[3];
		try (JsonParser parser = jsonFactory.createParser(json)) {
			if (parser.nextToken() != JsonToken.START_OBJECT) {
				return head;
			}
			while (parser.nextToken() == JsonToken.FIELD_NAME) {
				String field = parser.currentName();
				JsonToken value = parser.nextToken();
				if (value == JsonToken.VALUE_STRING) {
					switch (field) {
						case "resourceType" -> head[0] = parser.getText();
						case "url" -> head[1] = parser.getText();
						case "version" -> head[2] = parser.getText();
						default -> {}
					}
				} else {
					parser.skipChildren();
				}
			}
		}
		return head;
	}

	/** The keys PrePopulatedValidationSupport files a resource under. */
	private static List<String> keys(String url, String version) {
		List<String> keys = new ArrayList<>();
		keys.add(url);
		if (version != null && !version.isBlank()) {
			keys.add(url + "|" + version);
		}
		int last = url.lastIndexOf('/');
		if (last != -1) {
			keys.add(url.substring(last + 1));
			int previous = url.lastIndexOf('/', last - 1);
			if (previous != -1) {
				keys.add(url.substring(previous + 1));
			}
		}
		return keys;
	}

	private IBaseResource resource(Entry entry) {
		return parsed.computeIfAbsent(entry, e -> context.newJsonParser().parseResource(new String(e.json,
				java.nio.charset.StandardCharsets.UTF_8)));
	}

	private IBaseResource fetch(String type, String url) {
		if (url == null) {
			return null;
		}
		Entry entry = byUrl.get(url);
		return entry != null && entry.type.equals(type) ? resource(entry) : null;
	}

	private <T extends IBaseResource> List<T> all(Set<String> types) {
		List<T> all = new ArrayList<>();
		for (Entry entry : entries) {
			if (types.contains(entry.type)) {
				@SuppressWarnings("unchecked")
				T resource = (T) resource(entry);
				all.add(resource);
			}
		}
		return all;
	}

	@Override
	public FhirContext getFhirContext() {
		return context;
	}

	@Override
	public String getName() {
		return "IG packages " + countsByPackage.keySet();
	}

	@Override
	public IBaseResource fetchCodeSystem(String system) {
		return fetch("CodeSystem", system);
	}

	@Override
	public IBaseResource fetchValueSet(String url) {
		return fetch("ValueSet", url);
	}

	@Override
	public IBaseResource fetchStructureDefinition(String url) {
		return fetch("StructureDefinition", url);
	}

	@Override
	public <T extends IBaseResource> List<T> fetchAllStructureDefinitions() {
		return all(Set.of("StructureDefinition"));
	}

	@Override
	public List<IBaseResource> fetchAllConformanceResources() {
		return all(TYPES);
	}

	@Override
	public boolean isCodeSystemSupported(ValidationSupportContext support, String system) {
		Entry entry = system == null ? null : byUrl.get(system);
		return entry != null && entry.type.equals("CodeSystem");
	}

	@Override
	public boolean isValueSetSupported(ValidationSupportContext support, String url) {
		Entry entry = url == null ? null : byUrl.get(url);
		return entry != null && entry.type.equals("ValueSet");
	}

	/** Resources indexed per package ("name@version" to count), in load order. */
	Map<String, Integer> countsByPackage() {
		return countsByPackage;
	}

	/** How many resources have been parsed so far (the rest were never needed). */
	int parsedCount() {
		return parsed.size();
	}
}

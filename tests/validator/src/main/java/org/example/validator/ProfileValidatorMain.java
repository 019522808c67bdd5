package org.example.validator;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.context.support.IValidationSupport;
import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.UnknownCodeSystemWarningValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;

/**
 * The offline profile validator: loads the IG packages once, then validates FHIR R4 resources
 * sent to it one JSON object per line on standard input, answering one JSON object per line on
 * standard output (see {@link ValidationService} for the protocol).
 * <p>
 * Usage: {@code java ... ProfileValidatorMain [--extension-domain URL]... PACKAGE.tgz...} (the
 * order of the packages is their precedence; an extension whose URL starts with an extension
 * domain may be used without a definition: the adapter's own extensions are documented in the
 * README, not published as StructureDefinitions). Logs go to standard error; standard output
 * carries only answers.
 * <p>
 * The JVM stays up for as many requests as the caller sends, so the engine's start-up (package
 * loading, snapshot and value-set caches) is paid once per test session, not once per file.
 */
public final class ProfileValidatorMain {

	private ProfileValidatorMain() {}

	public static void main(String[] args) throws Exception {
		// First, before any library gets a chance to open a connection.
		NetworkGuard guard = NetworkGuard.install();
		// The engine's messages are localised; the allow-list quotes them in English.
		Locale.setDefault(Locale.US);

		PrintStream answers = new PrintStream(System.out, false, StandardCharsets.UTF_8);
		// Nothing else may write to the answer channel.
		System.setOut(System.err);

		List<Path> tarballs = new ArrayList<>();
		List<String> extensionDomains = new ArrayList<>();
		for (int i = 0; i < args.length; i++) {
			if (args[i].equals("--extension-domain") && i + 1 < args.length) {
				extensionDomains.add(args[++i]);
			} else {
				tarballs.add(Path.of(args[i]));
			}
		}
		long t0 = System.nanoTime();
		FhirContext context = FhirContext.forR4();
		IgPackages packages = IgPackages.load(context, tarballs);
		long loadedMs = (System.nanoTime() - t0) / 1_000_000;
		FhirInstanceValidator validator = new FhirInstanceValidator(buildChain(context, packages));
		configure(validator);
		validator.setCustomExtensionDomains(extensionDomains);

		ValidationService service = new ValidationService(context, validator, guard, packages);
		service.warmUp();
		System.err.printf(
				"profile validator ready in %d ms (packages loaded in %d ms): %s; network guard %s%n",
				(System.nanoTime() - t0) / 1_000_000,
				loadedMs,
				packages.countsByPackage(),
				guard.isActive() ? "active" : "NOT active");

		try (BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
				BufferedWriter out = new BufferedWriter(new OutputStreamWriter(answers, StandardCharsets.UTF_8))) {
			service.serve(in, out);
		}
	}

	/**
	 * The validation support chain, first match wins: the IG packages (so the current
	 * terminology package overrides the copies of HL7 code systems frozen into R4 core), then the
	 * R4 core specification from HAPI's jars, the code systems HAPI knows built in (UCUM,
	 * languages, currencies...), value-set expansion and code checks in memory, snapshot
	 * generation for any profile that lacks one, and last a warning (not an error) for code
	 * systems nobody here has (SNOMED CT, LOINC, RxNorm, NCIt: none is shipped in a package).
	 * No remote terminology service: with none in the chain, the engine has nothing to call.
	 */
	static ValidationSupportChain buildChain(FhirContext context, IgPackages packages) {
		InMemoryTerminologyServerValidationSupport inMemoryTerminology =
				new InMemoryTerminologyServerValidationSupport(context);
		UnknownCodeSystemWarningValidationSupport unknownCodeSystems =
				new UnknownCodeSystemWarningValidationSupport(context);
		unknownCodeSystems.setNonExistentCodeSystemSeverity(IValidationSupport.IssueSeverity.WARNING);
		return new ValidationSupportChain(
				packages,
				new DefaultProfileValidationSupport(context),
				new CommonCodeSystemsTerminologyService(context),
				inMemoryTerminology,
				new SnapshotGeneratingValidationSupport(context),
				unknownCodeSystems);
	}

	/**
	 * As strict as the HL7 validator's defaults, where HAPI's server is lenient: a claimed profile
	 * nobody can find is an error, and so is an extension that cannot be resolved (the engine
	 * itself lets extensions under example.org, where the adapter's own ones live, pass).
	 * References inside a Bundle are resolved and checked; references to a server are not.
	 */
	static void configure(FhirInstanceValidator validator) {
		validator.setErrorForUnknownProfiles(true);
		validator.setAnyExtensionsAllowed(false);
		validator.setNoExtensibleWarnings(false);
		validator.setAssumeValidRestReferences(true);
	}
}

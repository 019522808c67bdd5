package org.example.hapiserver;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.UnknownCodeSystemWarningValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.springframework.beans.factory.config.BeanPostProcessor;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/**
 * Validation of incoming request bodies (create, update, transaction, ...).
 * <p>
 * The chain knows the base R4 specification only. It rejects structurally invalid
 * resources (wrong cardinality, unknown elements, codes outside required bindings of
 * FHIR's own value sets, ...) but is lenient about things it cannot know here:
 * external code systems (SNOMED CT, LOINC, RxNorm, NCIt, ICD-10-CM), profiles that
 * are not loaded (mCODE, US Core, ...) and their extensions give warnings at most.
 * <p>
 * The chain is built privately (not exposed as an IValidationSupport bean) so that it
 * does not compete with the JPA server's own validation chain used by $validate.
 */
@Configuration
public class RequestValidationConfig {

	/**
	 * The same leniency for the JPA server's own validator (the one behind $validate):
	 * a profile that is not loaded is a warning, not an error, and extensions not known
	 * to the server are allowed. Unknown code systems are warnings there by default.
	 */
	@Bean
	public static BeanPostProcessor lenientJpaInstanceValidator() {
		return new BeanPostProcessor() {
			@Override
			public Object postProcessAfterInitialization(Object bean, String beanName) {
				if (bean instanceof FhirInstanceValidator validator && "myInstanceValidator".equals(beanName)) {
					validator.setErrorForUnknownProfiles(false);
					validator.setAnyExtensionsAllowed(true);
				}
				return bean;
			}
		};
	}

	@Bean
	public RequestValidatingInterceptor requestValidatingInterceptor(FhirContext fhirContext) {
		UnknownCodeSystemWarningValidationSupport unknownCodeSystems =
				new UnknownCodeSystemWarningValidationSupport(fhirContext);
		unknownCodeSystems.setNonExistentCodeSystemSeverity(IValidationSupport.IssueSeverity.WARNING);

		InMemoryTerminologyServerValidationSupport inMemoryTerminology =
				new InMemoryTerminologyServerValidationSupport(fhirContext);
		inMemoryTerminology.setIssueSeverityForCodeDisplayMismatch(IValidationSupport.IssueSeverity.WARNING);

		ValidationSupportChain chain = new ValidationSupportChain(
				new DefaultProfileValidationSupport(fhirContext),
				new CommonCodeSystemsTerminologyService(fhirContext),
				inMemoryTerminology,
				new SnapshotGeneratingValidationSupport(fhirContext),
				unknownCodeSystems);

		FhirInstanceValidator instanceValidator = new FhirInstanceValidator(chain);
		instanceValidator.setAnyExtensionsAllowed(true);
		instanceValidator.setErrorForUnknownProfiles(false);
		instanceValidator.setNoExtensibleWarnings(true);
		// References inside a transaction are urn:uuid or server-relative; don't chase them.
		instanceValidator.setAssumeValidRestReferences(true);

		RequestValidatingInterceptor interceptor = new LenientRequestValidatingInterceptor();
		interceptor.addValidatorModule(instanceValidator);
		interceptor.setFailOnSeverity(ResultSeverityEnum.ERROR);
		// No X-FHIR-Request-Validation headers on success: they can get large.
		interceptor.setAddResponseHeaderOnSeverity(null);
		interceptor.setAddResponseOutcomeHeaderOnSeverity(null);
		// Don't append the request's validation warnings to response OperationOutcomes.
		interceptor.setAddValidationResultsToResponseOperationOutcome(false);
		return interceptor;
	}
}

package org.example.hapiserver;

import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.server.exceptions.AuthenticationException;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;

/**
 * A {@link RequestValidatingInterceptor} that leaves {@code $validate} requests alone:
 * their body is validated by the JPA server's own $validate operation, which answers
 * with an OperationOutcome (instead of this interceptor rejecting it with 422).
 */
public class LenientRequestValidatingInterceptor extends RequestValidatingInterceptor {

	@Override
	public boolean incomingRequestPostProcessed(
			RequestDetails requestDetails, HttpServletRequest request, HttpServletResponse response)
			throws AuthenticationException {
		if ("$validate".equals(requestDetails.getOperation())) {
			return true;
		}
		return super.incomingRequestPostProcessed(requestDetails, request, response);
	}
}
